# attack: exponential list.count
# expect: error StepLimitExceeded
def f(ctx):
    a = [1]
    for i in range(60):
        a = [a, a]
    return [a, a].count(a)
