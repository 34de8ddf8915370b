# attack: fullwidth e in eval
# expect: refused non-ascii-identifier
def f(ctx):
    return ｅval('1')
