# attack: exponential state value
# expect: error StepLimitExceeded|SizeLimitExceeded
def f(ctx):
    a = [1]
    for i in range(60):
        a = [a, a]
    ctx.put('x', a)
