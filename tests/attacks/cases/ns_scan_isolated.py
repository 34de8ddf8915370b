# attack: scan sees only this contract's namespace
# expect: ok
# call: f ro
def f(ctx):
    return ctx.scan('', limit=1000)
