# attack: format_map traversal
# expect: refused format-method
def f(ctx):
    return '{c._state}'.format_map({'c': ctx})
