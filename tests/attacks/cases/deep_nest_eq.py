# attack: very deep nesting then ==
# expect: error SizeLimitExceeded
def f(ctx):
    x = []
    y = []
    for i in range(50000):
        x = [x]
        y = [y]
    return x == y
