# attack: str.join amplification
# expect: error SizeLimitExceeded
def f(ctx):
    s = 'a' * 900000
    return len(','.join([s, s, s]))
