# attack: format string attribute traversal
# expect: refused format-method
def f(ctx):
    return '{0.caller.__class__.__init__.__globals__}'.format(ctx)
