# attack: isinstance with a foreign type
# expect: error SandboxViolation
def f(ctx):
    return isinstance(1, range)
