# attack: globals()
# expect: refused forbidden-name
def f(ctx):
    return globals()
