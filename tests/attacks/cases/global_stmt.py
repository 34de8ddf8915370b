# attack: global statement
# expect: refused global
X = 1
def f(ctx):
    global X
    X = 2
