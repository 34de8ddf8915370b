# attack: exponential equality on shared dicts
# expect: error StepLimitExceeded
def f(ctx):
    a = {}
    b = {}
    for i in range(60):
        a = {'x': a, 'y': a}
        b = {'x': b, 'y': b}
    return a == b
