# attack: exponential ordering comparison
# expect: error StepLimitExceeded
def f(ctx):
    a = [1]
    b = [1]
    for i in range(60):
        a = [a, a]
        b = [b, b]
    return a < b
