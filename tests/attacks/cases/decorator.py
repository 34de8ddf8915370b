# attack: decorator
# expect: refused decorator
def d(g):
    return g
@d
def f(ctx):
    return 1
