# attack: NUL in key to end the prefix
# expect: error BadStateAccess
def f(ctx):
    ctx.put('x\x00cs\x00other\x00k', 1)
