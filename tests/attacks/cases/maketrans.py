# attack: str.maketrans (class method)
# expect: refused attribute
def f(ctx):
    return ''.maketrans('a', 'b')
