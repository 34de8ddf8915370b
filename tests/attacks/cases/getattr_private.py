# attack: getattr to private ctx state
# expect: refused forbidden-name
def f(ctx):
    return getattr(ctx, '_state')
