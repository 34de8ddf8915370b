# attack: exec
# expect: refused forbidden-name
def f(ctx):
    exec('import os')
