# attack: __import__ builtin
# expect: refused underscore-name|attribute
def f(ctx):
    return __import__('os').system('id')
