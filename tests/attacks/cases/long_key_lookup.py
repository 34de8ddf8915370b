# attack: equal-content long str key: every dict lookup memcmps 256 kB for one step
# expect: error StepLimitExceeded
def f(ctx):
    k = "x" * 200000
    d = {k: 1}
    j = (k + "y")[:-1]
    t = 0
    while True:
        t += d[j]
