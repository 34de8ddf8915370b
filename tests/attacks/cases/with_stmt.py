# attack: with statement
# expect: refused with
def f(ctx):
    with ctx:
        pass
