# attack: address leak through str(function)
# expect: error SandboxViolation
def f(ctx):
    return str(f)
