# attack: long division of capped big ints, one cheap step each
# expect: error StepLimitExceeded
def f(ctx):
    a = 2 ** 4000 + 12345
    b = 2 ** 2000 + 7
    while True:
        q = a // b
        r = a % b
