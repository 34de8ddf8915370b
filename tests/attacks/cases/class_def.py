# attack: class definition (metaclass tricks)
# expect: refused class
class A:
    pass
def f(ctx):
    return 1
