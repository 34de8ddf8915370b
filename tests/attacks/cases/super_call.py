# attack: super()
# expect: refused forbidden-name
def f(ctx):
    return super()
