# attack: hash-order independent dict iteration
# expect: ok
def f(ctx):
    d = {}
    for w in 'the quick brown fox jumps'.split():
        d[w] = len(w)
    return [list(d.keys()), sorted(d.items())]
