# attack: delete in a read-only call
# expect: error ReadOnlyViolation
# call: f ro
def f(ctx):
    ctx.delete('a')
