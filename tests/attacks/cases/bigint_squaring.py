# attack: repeated squaring
# expect: error SizeLimitExceeded
def f(ctx):
    x = 3
    while True:
        x = x * x
