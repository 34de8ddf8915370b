# attack: import inside a function
# expect: refused import
def f(ctx):
    from subprocess import run
    return 1
