# attack: vars()
# expect: refused forbidden-name
def f(ctx):
    return vars(ctx)
