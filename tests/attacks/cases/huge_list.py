# attack: list repeat bomb
# expect: error SizeLimitExceeded
def f(ctx):
    return len([0] * 10 ** 9)
