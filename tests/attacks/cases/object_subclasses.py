# attack: object.__subclasses__
# expect: refused forbidden-name
def f(ctx):
    return object
