# attack: scan limit bomb
# expect: error BadStateAccess
def f(ctx):
    return ctx.scan('', limit=10 ** 9)
