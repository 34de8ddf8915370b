# attack: absolute state key
# expect: error BadStateAccess
def f(ctx):
    return ctx.get('/etc/passwd')
