# attack: eval
# expect: refused forbidden-name
def f(ctx):
    return eval('2+2')
