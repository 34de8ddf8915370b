# attack: recursion hidden in a sort key
# expect: error RecursionLimitExceeded|StepLimitExceeded
def deep(n):
    return deep(n + 1)
def f(ctx):
    return sorted([3, 1, 2], key=deep)
