# attack: f-string nested format spec
# expect: refused format-spec
def f(ctx):
    n = 999999999
    return f'{1:{n}}'
