# attack: write amplification
# expect: error SizeLimitExceeded
def f(ctx):
    for i in range(5000):
        ctx.put('k' + str(i), i)
