# attack: private ctx attribute
# expect: refused underscore-name
def f(ctx):
    return ctx._state.get(b'x')
