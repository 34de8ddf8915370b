# attack: over-long key
# expect: error BadStateAccess
def f(ctx):
    ctx.put('k' * 5000, 1)
