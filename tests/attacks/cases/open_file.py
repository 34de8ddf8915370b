# attack: open a file
# expect: refused forbidden-name|attribute
def f(ctx):
    return open('/etc/passwd').read()
