# attack: enumerate a huge range
# expect: error SizeLimitExceeded
def f(ctx):
    return len(enumerate(range(10 ** 9)))
