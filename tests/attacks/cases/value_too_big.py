# attack: oversized state value
# expect: error SizeLimitExceeded
def f(ctx):
    ctx.put('a', 'x' * 900000)
