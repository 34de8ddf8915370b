# attack: plain import
# expect: refused import
import os
def f(ctx):
    return os.getcwd()
