# attack: finally to run code after an abort
# expect: refused try
def f(ctx):
    try:
        while True:
            pass
    finally:
        ctx.put('a', 1)
