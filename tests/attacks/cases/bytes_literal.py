# attack: bytes literal
# expect: refused bytes
def f(ctx):
    return b'\x00'
