# attack: identity of interned ints
# expect: refused identity
def f(ctx):
    return 1000 is 1000
