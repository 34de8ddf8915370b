# attack: unknown ledger index
# expect: error BadStateAccess
def f(ctx):
    return ctx.index('../keys', 'x')
