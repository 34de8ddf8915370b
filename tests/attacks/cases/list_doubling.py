# attack: list doubling via extend
# expect: error SizeLimitExceeded|StepLimitExceeded
def f(ctx):
    x = [1]
    while True:
        x.extend(x)
