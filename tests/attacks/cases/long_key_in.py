# attack: equal-content long str key through 'in' and dict.get
# expect: error StepLimitExceeded
def f(ctx):
    k = "x" * 200000
    d = {k: 1}
    j = (k + "y")[:-1]
    while True:
        if j in d and d.get(j):
            pass
