# attack: exception methods
# expect: refused attribute
def f(ctx):
    try:
        return 1 // 0
    except ZeroDivisionError as e:
        return e.with_traceback(None)
