# attack: shift bomb
# expect: error SizeLimitExceeded
def f(ctx):
    return 1 << (10 ** 9)
