# attack: generator frame
# expect: refused attribute
def f(ctx):
    return [x for x in []].gi_frame
