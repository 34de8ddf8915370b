# attack: str.replace amplification
# expect: error SizeLimitExceeded
def f(ctx):
    s = 'a' * 1000
    return len(s.replace('a', s).replace('a', s))
