# attack: overwrite ctx.caller
# expect: refused attribute-store
def f(ctx):
    ctx.caller = 'admin'
    return 1
