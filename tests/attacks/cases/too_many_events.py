# attack: event flood
# expect: error SizeLimitExceeded
def f(ctx):
    for i in range(5000):
        ctx.emit('e', {'i': i})
