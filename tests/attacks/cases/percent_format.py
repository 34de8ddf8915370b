# attack: %-format width bomb
# expect: error SandboxViolation
def f(ctx):
    return '%999999999d' % 1
