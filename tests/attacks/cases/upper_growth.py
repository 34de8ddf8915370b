# attack: case mapping that triples length
# expect: error SizeLimitExceeded
def f(ctx):
    return len(('\ufb03' * 400000).upper())
