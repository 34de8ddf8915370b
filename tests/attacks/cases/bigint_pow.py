# attack: big-int power
# expect: error SizeLimitExceeded
def f(ctx):
    return 10 ** (10 ** 9)
