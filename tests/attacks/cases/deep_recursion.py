# attack: unbounded recursion
# expect: error RecursionLimitExceeded
def f(ctx, n=0):
    return f(ctx, n + 1)
