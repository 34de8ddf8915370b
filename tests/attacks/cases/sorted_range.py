# attack: sort a huge range
# expect: error SizeLimitExceeded
def f(ctx):
    return sorted(range(10 ** 9))[0]
