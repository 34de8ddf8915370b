# attack: modular power with huge exponent and modulus
# expect: error StepLimitExceeded
def f(ctx):
    m = 2 ** 4000 + 1
    return pow(3, m - 2, m) + pow(5, m - 2, m) + pow(7, m - 2, m)
