# attack: huge record id
# expect: error BadStateAccess
def f(ctx):
    return ctx.record('r' * 100000)
