# attack: augmented string doubling
# expect: error SizeLimitExceeded|StepLimitExceeded
def f(ctx):
    s = 'ab'
    while True:
        s += s
