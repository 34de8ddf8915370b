# attack: match statement
# expect: refused match
def f(ctx):
    match ctx:
        case _:
            return 1
