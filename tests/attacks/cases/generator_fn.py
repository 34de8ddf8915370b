# attack: generator function
# expect: refused generator
def f(ctx):
    yield 1
