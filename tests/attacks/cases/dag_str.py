# attack: exponential str()
# expect: error StepLimitExceeded
def f(ctx):
    a = [1]
    for i in range(60):
        a = [a, a]
    return len(str(a))
