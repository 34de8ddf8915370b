# attack: quadratic list.insert(0)
# expect: error StepLimitExceeded
def f(ctx):
    x = [0] * 900000
    while True:
        x.insert(0, 1)
        x.pop()
