# attack: walk object subclasses from a tuple
# expect: refused underscore-name
def f(ctx):
    return ().__class__.__bases__[0].__subclasses__()
