# attack: for over an enormous range
# expect: error StepLimitExceeded
def f(ctx):
    n = 0
    for i in range(10 ** 18):
        n += 1
    return n
