# attack: non-str key
# expect: error BadStateAccess
def f(ctx):
    ctx.put(5, 1)
