# attack: non-int membership in a huge range
# expect: error StepLimitExceeded
def f(ctx):
    return 'x' in range(10 ** 15)
