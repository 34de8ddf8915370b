# attack: string repeat bomb
# expect: error SizeLimitExceeded
def f(ctx):
    return len('a' * 10 ** 10)
