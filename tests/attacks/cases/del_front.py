# attack: quadratic del x[0]
# expect: error StepLimitExceeded
def f(ctx):
    x = [0] * 900000
    while True:
        x.append(1)
        del x[0]
