# attack: non-ASCII key
# expect: error BadStateAccess
def f(ctx):
    ctx.put('\u2025/x', 1)
