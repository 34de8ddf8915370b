# attack: nested comprehension blow-up
# expect: error StepLimitExceeded|SizeLimitExceeded
def f(ctx):
    return len([[i * j for j in range(10 ** 6)] for i in range(10 ** 6)])
