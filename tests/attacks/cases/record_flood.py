# attack: hammer the node with ledger reads through ctx
# expect: error StepLimitExceeded
def f(ctx):
    while True:
        ctx.record("r1")
        ctx.index("patient", "p1", None, 1000)
        ctx.scan("", None, 1000)
