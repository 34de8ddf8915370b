# attack: hash-order dependent set iteration
# expect: refused set
def f(ctx):
    return [x for x in {'b', 'a', 'c'}]
