# attack: exponential result serialisation
# expect: error StepLimitExceeded|SizeLimitExceeded
def f(ctx):
    a = [1]
    for i in range(60):
        a = [a, a]
    return a
