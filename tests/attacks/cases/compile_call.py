# attack: compile
# expect: refused forbidden-name
def f(ctx):
    return compile('1', 'x', 'eval')
