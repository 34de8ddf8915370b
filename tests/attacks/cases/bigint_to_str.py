# attack: quadratic int-to-decimal conversion of a capped big int
# expect: error StepLimitExceeded
def f(ctx):
    a = 2 ** 4000 + 1
    while True:
        s = str(a)
        t = f"{a}"
        u = int(s)
