"""The worker process: runs contract calls for the engine, one at a time, under rlimits.

Started by ``pool`` as ``python -m pienode.execution.worker`` with PYTHONHASHSEED=0 and its
protocol on fds passed as argv. Before its first call it warms up (so nothing is imported
later), applies rlimits (address space, file size 0, no core), drops root if it has it, and
caps its file descriptors at those already open: even code that escaped the subset could
not open a file or a socket. Owns the worker side of the protocol and the ``StateView``
proxy that turns every ctx state read into one round trip to the parent. Must never touch
disk, the network or the ledger: it has no handle to them, its file-size and file-count
rlimits are zero/minimal, and everything it learns arrives over the pipe.

Protocol (msgpack frames, see ``wire``):
  parent -> worker  ["call", name, code_hash, source|None, fn, kwargs, ctx, read_only, limits]
  worker -> parent  ["need"]                         (source unknown here: resend with it)
  worker -> parent  ["get", key] | ["scan", prefix, start_after, limit]
                    | ["record", id] | ["index", name, value, after, limit]
  parent -> worker  ["r", value]
  worker -> parent  ["done", ok, value, error, steps, writes, events]
  parent -> worker  ["ping"]  ->  ["pong", python "major.minor", engine version]
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Any


def _apply_rlimits(memory_bytes: int) -> None:
    def lim(which: int, value: int) -> None:
        try:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY
                                       else hard))
        except (ValueError, OSError):
            pass  # best effort: the wall-clock guard in the parent still holds

    if memory_bytes > 0:
        lim(resource.RLIMIT_AS, memory_bytes)
    lim(resource.RLIMIT_FSIZE, 0)
    lim(resource.RLIMIT_CORE, 0)


_WARM_UP = '''
def f(ctx, n=3):
    d = {"a": [1, "x", None, True]}
    ctx.put("k", d)
    s = f"{n}{d}" + str(ctx.get("k")) + "x" * 3 + repr([1]) + str(2 ** 70)
    t = sorted([[2, "b"], [1, "a"]], key=lambda p: p[0])
    u = "A b".lower().upper().split() + list(reversed("ab")) + [int("12"), divmod(7, 2)]
    v = {str(k): v for k, v in enumerate(zip([1, 2], "ab"))}
    ctx.emit("e", {"s": s[:5]})
    try:
        w = d["missing"]
    except KeyError as e:
        w = str(e)
    return [s, t, u, v, w, ctx.scan(""), ctx.record("r"), ctx.index("type", "x"),
            "abc".replace("b", "c").center(5).isdigit(), 7 // 2 % 3, -1 << 3]
'''


def _warm_up() -> None:
    """Run one call in-process so every lazily imported module is loaded before lock-down."""
    from pienode.execution.interpreter import run_call
    from pienode.execution.types import (CallContext, Caller, MemoryState)
    from pienode.execution.validator import validate

    code = validate(_WARM_UP, "warmup")
    st = MemoryState()
    st.add_record({"record_id": "r", "patient_id": "p", "data_type": "x", "summary": {}})
    call = CallContext(Caller("u", "r", "low"), 0, "t", 0, "warmup")
    r = run_call(code, "f", {}, call, st, read_only=False)
    if not r.ok:
        raise SystemExit(f"worker warm-up failed: {r.error}")
    run_call(code, "f", {}, call, st, read_only=True)


def _lock_down() -> None:
    """Defence in depth behind the subset: no new files or sockets, no privileges."""
    os.chdir("/")
    if os.geteuid() == 0:  # drop root: the node's keys stay unreadable to a worker
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        except OSError:
            pass
    # Fill every gap below the highest open fd, then cap the fd count there: any open(),
    # socket() or pipe() a contract could ever reach fails with EMFILE.
    fds = sorted(int(x) for x in os.listdir("/proc/self/fd")) if os.path.isdir(
        "/proc/self/fd") else [0, 1, 2]
    top = max(fds)
    for fd in range(top):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDONLY)  # takes the lowest free fd: this gap
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, top + 1))
    except (ValueError, OSError):
        pass


def _set_cpu_budget(seconds: int) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    now = int(used.ru_utime + used.ru_stime) + 1
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (now + seconds, hard))
    except (ValueError, OSError):
        pass


class IpcState:
    """``StateView`` whose every call is one round trip to the parent."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd = rfd, wfd

    def _ask(self, msg: list[Any]) -> Any:
        from pienode.execution.wire import read_frame, write_frame

        write_frame(self.wfd, msg)
        reply = read_frame(self.rfd)
        if not (type(reply) is list and len(reply) == 2 and reply[0] == "r"):
            raise SystemExit(3)  # the parent broke protocol: nothing sane left to do
        return reply[1]

    def get(self, key: bytes) -> bytes | None:
        return self._ask(["get", key])

    def scan(self, prefix: bytes, start_after: bytes | None, limit: int) -> list[Any]:
        return [(k, v) for k, v in self._ask(["scan", prefix, start_after, limit])]

    def record(self, record_id: str) -> Any:
        return self._ask(["record", record_id])

    def index(self, name: str, value: str, after: str | None, limit: int) -> list[str]:
        return self._ask(["index", name, value, after, limit])


def main() -> None:
    rfd, wfd, memory = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    # Import everything a call can need before the fd and memory limits bite.
    from pienode.execution import runtime_tables
    from pienode.execution.interpreter import run_call
    from pienode.execution.types import CallContext, Caller, ContractCode, Limits
    from pienode.execution.wire import WireClosed, read_frame, write_frame
    import pienode.execution.ctx  # noqa: F401  (registers ctx methods)

    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # nothing a contract does can reach the parent's stdout
    _warm_up()
    _apply_rlimits(memory)
    _lock_down()
    state = IpcState(rfd, wfd)
    sources: dict[str, str] = {}
    while True:
        try:
            msg = read_frame(rfd)
        except WireClosed:
            return
        kind = msg[0]
        if kind == "ping":
            write_frame(wfd, ["pong", "%d.%d" % sys.version_info[:2],
                              runtime_tables.ENGINE_VERSION])
            continue
        if kind != "call":
            return
        _, name, code_hash, source, fn, kwargs, c, read_only, limits_w = msg
        if source is not None:
            if len(sources) > 256:
                sources.clear()
            sources[code_hash] = source
        src = sources.get(code_hash)
        if src is None:
            write_frame(wfd, ["need"])
            continue
        limits = Limits.from_wire(limits_w)
        _set_cpu_budget(limits.cpu_s)
        code = ContractCode(name=name, source=src, code_hash=code_hash, entry_points=())
        call = CallContext(Caller(c[0], c[1], c[2]), c[3], c[4], c[5], c[6])
        r = run_call(code, fn, kwargs, call, state, read_only=bool(read_only), limits=limits)
        write_frame(wfd, ["done", r.ok, r.value, r.error, r.steps,
                          [list(w) for w in r.writes], [list(e) for e in r.events]])


if __name__ == "__main__":
    main()
