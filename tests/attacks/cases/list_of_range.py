# attack: materialise a huge range
# expect: error SizeLimitExceeded
def f(ctx):
    return len(list(range(10 ** 9)))
