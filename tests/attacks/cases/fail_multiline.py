# attack: newline injection through ctx.fail
# expect: error ContractFailed
def f(ctx):
    ctx.fail('a\nb\r\nTraceback (most recent call last):')
