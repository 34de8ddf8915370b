# attack: str.zfill width
# expect: error SizeLimitExceeded
def f(ctx):
    return len('1'.zfill(10 ** 9))
