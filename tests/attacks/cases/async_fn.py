# attack: coroutine
# expect: refused async
async def f(ctx):
    return 1
