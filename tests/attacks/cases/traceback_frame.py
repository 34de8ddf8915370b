# attack: exception traceback to frame globals
# expect: refused underscore-name|attribute
def f(ctx):
    try:
        return 1 // 0
    except ZeroDivisionError as e:
        return e.__traceback__.tb_frame.f_globals
