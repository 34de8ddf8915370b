# attack: str() of a self-referencing dict
# expect: error SizeLimitExceeded
def f(ctx):
    d = {}
    d["self"] = d
    return str(d)
