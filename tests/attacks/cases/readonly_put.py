# attack: write in a read-only call
# expect: error ReadOnlyViolation
# call: f ro
def f(ctx):
    ctx.put('a', 1)
