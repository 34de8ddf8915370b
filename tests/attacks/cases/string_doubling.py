# attack: string doubling in a loop
# expect: error SizeLimitExceeded|StepLimitExceeded
def f(ctx):
    s = 'ab'
    while True:
        s = s + s
