# attack: int() of a huge digit string
# expect: error SizeLimitExceeded
def f(ctx):
    return int('9' * 100000)
