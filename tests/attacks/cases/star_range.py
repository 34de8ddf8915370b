# attack: unpack a huge range into arguments
# expect: error SizeLimitExceeded
def f(ctx):
    return max(*range(10 ** 9))
