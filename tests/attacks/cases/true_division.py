# attack: / produces floats
# expect: refused true-division
def f(ctx):
    return 1 / 3
