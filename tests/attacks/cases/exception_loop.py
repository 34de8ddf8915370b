# attack: raise and catch in a tight loop
# expect: error StepLimitExceeded
def f(ctx):
    d = {}
    while True:
        try:
            d["missing"]
        except KeyError:
            pass
