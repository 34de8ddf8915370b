# attack: mathematical bold letters normalise to open
# expect: refused non-ascii-identifier
def f(ctx):
    return 𝐨𝐩𝐞𝐧('/etc/passwd')
