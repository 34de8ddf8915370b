# attack: function code object
# expect: refused underscore-name|attribute
def f(ctx):
    return f.__code__.co_consts
