# attack: catch everything to survive the step limit
# expect: refused except
def f(ctx):
    try:
        while True:
            pass
    except BaseException:
        return 'survived'
