# attack: very deep nesting then str()
# expect: error SizeLimitExceeded
def f(ctx):
    x = []
    for i in range(50000):
        x = [x]
    return len(str(x))
