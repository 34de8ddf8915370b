# attack: exponential f-string
# expect: error StepLimitExceeded
def f(ctx):
    a = ['x']
    for i in range(60):
        a = [a, a]
    return f'{a}'
