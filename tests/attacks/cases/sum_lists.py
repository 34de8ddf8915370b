# attack: quadratic sum of lists
# expect: error ContractFault
def f(ctx):
    return sum([[1]] * 1000, [])
