# attack: cyclic value stored
# expect: error SizeLimitExceeded|StepLimitExceeded
def f(ctx):
    x = []
    x.append(x)
    ctx.put('k', x)
