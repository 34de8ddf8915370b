# attack: dict changed during iteration
# expect: error ContractFault
def f(ctx):
    d = {'a': 1}
    for k in d:
        d[k + 'x'] = 1
