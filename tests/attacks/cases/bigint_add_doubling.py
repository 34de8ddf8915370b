# attack: int doubling by addition
# expect: error SizeLimitExceeded|StepLimitExceeded
def f(ctx):
    x = 1
    while True:
        x = x + x
