# attack: zero-width space inside an identifier
# expect: refused non-ascii-identifier
def f(ctx):
    a​b = 1
    return 1
