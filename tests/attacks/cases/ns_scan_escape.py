# attack: scan outside the namespace
# expect: error BadStateAccess
def f(ctx):
    return ctx.scan('../')
