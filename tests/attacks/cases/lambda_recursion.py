# attack: recursion through a lambda
# expect: error RecursionLimitExceeded|StepLimitExceeded
def f(ctx):
    g = lambda n: g(n + 1)
    return g(0)
