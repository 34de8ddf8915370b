# attack: sort a list that contains itself
# expect: error SizeLimitExceeded
def f(ctx):
    x = [1]
    x.append(x)
    return sorted([x, x])
