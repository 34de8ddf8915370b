# attack: breakpoint()
# expect: refused forbidden-name
def f(ctx):
    breakpoint()
