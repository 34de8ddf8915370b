# attack: catch every allowed class around a loop
# expect: error StepLimitExceeded
def f(ctx):
    try:
        while True:
            pass
    except (ValueError, TypeError, ArithmeticError, LookupError, AssertionError):
        return 'survived'
