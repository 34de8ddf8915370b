# attack: isinstance over a long list of types, many times
# expect: error StepLimitExceeded|SizeLimitExceeded
def f(ctx):
    ts = [str] * 900000
    while True:
        isinstance(1, ts)
