# attack: bare except
# expect: refused except
def f(ctx):
    try:
        while True:
            pass
    except:
        return 'survived'
