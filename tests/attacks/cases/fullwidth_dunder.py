# attack: fullwidth letters NFKC-normalise to __class__
# expect: refused non-ascii-identifier
def f(ctx):
    return ().__ｃｌａｓｓ__
