# attack: str.center width
# expect: error SizeLimitExceeded
def f(ctx):
    return len('a'.center(10 ** 9))
