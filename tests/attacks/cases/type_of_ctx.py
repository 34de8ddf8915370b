# attack: type() introspection
# expect: refused forbidden-name|underscore-name
def f(ctx):
    return type(ctx).__dict__
