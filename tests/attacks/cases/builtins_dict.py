# attack: reach __builtins__
# expect: refused underscore-name
def f(ctx):
    return __builtins__['eval']('1')
