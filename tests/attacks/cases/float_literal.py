# attack: float arithmetic
# expect: refused float
def f(ctx):
    return 0.1 + 0.2
