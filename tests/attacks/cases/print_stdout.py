# attack: print to the worker's stdout (protocol pipe)
# expect: refused forbidden-name
def f(ctx):
    print('\x00\x00\x00\x05hello')
