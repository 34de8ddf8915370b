# attack: equality of dicts whose long str keys are equal but distinct objects
# expect: error StepLimitExceeded
def f(ctx):
    k = "x" * 200000
    a = {k: 1}
    b = {(k + "y")[:-1]: 1}
    while True:
        if a == b:
            pass
