# attack: f-string width bomb
# expect: refused format-spec
def f(ctx):
    return f'{1:>999999999}'
