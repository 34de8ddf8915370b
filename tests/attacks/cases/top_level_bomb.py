# attack: giant constant computed at module level
# expect: error SizeLimitExceeded
BIG = "x" * 1000000000
def f(ctx):
    return len(BIG)
