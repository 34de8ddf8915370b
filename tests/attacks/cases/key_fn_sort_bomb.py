# attack: sort key doing exponential work
# expect: error StepLimitExceeded
def f(ctx):
    a = [1]
    for i in range(60):
        a = [a, a]
    return sorted([1, 2], key=lambda x: str(a))
