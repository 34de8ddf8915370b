# attack: state key with ../
# expect: error BadStateAccess
def f(ctx):
    ctx.put('../record_search/x', 1)
