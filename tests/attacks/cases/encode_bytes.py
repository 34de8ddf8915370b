# attack: reach bytes via encode
# expect: refused attribute
def f(ctx):
    return 'x'.encode()
