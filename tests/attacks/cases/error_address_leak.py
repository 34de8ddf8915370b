# attack: exception carrying an object
# expect: error ContractFault
def f(ctx):
    raise ValueError(lambda: 0)
