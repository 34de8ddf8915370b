# attack: list method on a str
# expect: error SandboxViolation
def f(ctx):
    s = 'abc'
    s.append(1)
