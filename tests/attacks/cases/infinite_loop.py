# attack: infinite while loop
# expect: error StepLimitExceeded
def f(ctx):
    while True:
        pass
