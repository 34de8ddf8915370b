# attack: huge dict comprehension
# expect: error StepLimitExceeded
def f(ctx):
    return len({str(i): i for i in range(10 ** 8)})
