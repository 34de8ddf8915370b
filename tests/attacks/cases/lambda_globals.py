# attack: function globals
# expect: refused underscore-name
def f(ctx):
    return (lambda: 0).__globals__
