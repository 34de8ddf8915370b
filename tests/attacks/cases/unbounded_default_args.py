# attack: giant default argument evaluated at definition time
# expect: error SizeLimitExceeded
def f(ctx, x=[0] * 10 ** 9):
    return len(x)
