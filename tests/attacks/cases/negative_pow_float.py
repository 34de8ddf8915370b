# attack: float via negative exponent
# expect: error SandboxViolation
def f(ctx):
    return 2 ** -1
