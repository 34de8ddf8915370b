"""``ContractEngine``: a pool of worker processes, the real isolation boundary.

Owns worker lifecycle (spawn with a fixed hash seed and rlimits, replace on death, hang or
protocol breach), the parent side of the worker protocol (see ``worker``), answering the
worker's state questions from the node's ``StateView`` after checking every key lies in the
contract's namespace, and the wall-clock guard. Must never let a worker's failure reach the
caller as anything but a one-line ``InternalError`` result, and never block the event loop
(``call`` runs the exchange in a thread; ``call_sync`` is for the block executor's thread).

Determinism: the step budget and size checks trip first in every realistic case; the wall
clock, the CPU rlimit and the address-space rlimit are last lines of defence whose failures
are node-local (``CallResult.local_fault``), never a contract verdict to record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pienode.execution.types import (
    CallContext,
    CallResult,
    ContractCode,
    Limits,
    StateView,
    namespace_prefix,
)
from pienode.execution.wire import WireClosed, WireTimeout, read_frame, write_frame

log = logging.getLogger(__name__)
_PKG_ROOT = str(Path(__file__).resolve().parents[2])
_MAX_LIMIT = 1000


class _Breach(Exception):
    """The worker broke protocol; it is killed and replaced."""


class _Worker:
    def __init__(self, memory_bytes: int) -> None:
        p_r, c_w = os.pipe()  # worker -> parent
        c_r, p_w = os.pipe()  # parent -> worker
        env = dict(os.environ)
        env["PYTHONHASHSEED"] = "0"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["PYTHONPATH"] = _PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pienode.execution.worker", str(c_r), str(c_w),
             str(memory_bytes)],
            pass_fds=(c_r, c_w), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, close_fds=True,
        )
        os.close(c_r)
        os.close(c_w)
        self.rfd, self.wfd = p_r, p_w
        self.known: set[str] = set()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("contract worker %s did not exit after SIGKILL", self.proc.pid)
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class ContractEngine:
    """Run contract calls in a pool of sandboxed worker processes.

    Args:
        workers: pool size (each worker runs one call at a time).
        limits: default budgets; a call may pass its own.
    """

    def __init__(self, workers: int = 2, limits: Limits = Limits()) -> None:
        self.size = max(1, workers)
        self.limits = limits
        self._idle: "queue.Queue[_Worker]" = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._started = False
        self.replaced = 0  # workers replaced after a crash, hang or breach (for /metrics)

    # ---- lifecycle ---------------------------------------------------------------------
    def start_sync(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            for _ in range(self.size):
                self._spawn()

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    def stop_sync(self) -> None:
        with self._lock:
            self._started = False
            workers, self._all = self._all, set()
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for w in workers:
            w.kill()

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def _spawn(self) -> None:
        w = _Worker(self.limits.memory_bytes)
        self._all.add(w)
        self._idle.put(w)

    def _retire(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            self._all.discard(w)
            self.replaced += 1
            if self._started:
                self._spawn()

    def python_version(self) -> str:
        """The interpreter minor version every worker runs (pin it across a consortium)."""
        return "%d.%d" % sys.version_info[:2]

    @staticmethod
    def fingerprint() -> dict[str, object]:
        """What must match on every node for contracts to answer alike: the interpreter's
        minor version (its Unicode tables drive str case and class methods), the engine's
        cost table version. Record it in genesis and refuse to start on a mismatch."""
        import unicodedata

        from pienode.execution.runtime_tables import ENGINE_VERSION

        return {"python": "%d.%d" % sys.version_info[:2], "unicode": unicodedata.unidata_version,
                "engine": ENGINE_VERSION}

    # ---- calls -------------------------------------------------------------------------
    async def call(self, code: ContractCode, fn: str, kwargs: dict[str, Any],
                   ctx: CallContext, state: StateView, *, read_only: bool,
                   limits: Limits | None = None) -> CallResult:
        return await asyncio.to_thread(self.call_sync, code, fn, kwargs, ctx, state,
                                       read_only=read_only, limits=limits)

    def call_sync(self, code: ContractCode, fn: str, kwargs: dict[str, Any],
                  ctx: CallContext, state: StateView, *, read_only: bool,
                  limits: Limits | None = None) -> CallResult:
        """Run one call in a worker; blocks until a worker is free and the call ends."""
        if not self._started:
            self.start_sync()
        lim = limits or self.limits
        w = self._idle.get()
        deadline = time.monotonic() + lim.wall_clock_s
        try:
            result = self._exchange(w, code, fn, kwargs, ctx, state, read_only, lim, deadline)
        except WireTimeout:
            self._retire(w)
            return CallResult(False, error=f"InternalError: WorkerTimeout after "
                              f"{lim.wall_clock_s:g}s (worker replaced)")
        except WireClosed:
            code_ = w.proc.poll()
            self._retire(w)
            return CallResult(False, error=f"InternalError: WorkerCrashed (exit {code_}; "
                              "worker replaced)")
        except _Breach as exc:
            self._retire(w)
            return CallResult(False, error=f"InternalError: WorkerBreach ({exc})")
        except Exception as exc:  # the node's StateView failed: a local fault
            self._retire(w)
            return CallResult(False, error=f"InternalError: state view failed "
                              f"({type(exc).__name__})")
        self._idle.put(w)
        return result

    def _exchange(self, w: _Worker, code: ContractCode, fn: str, kwargs: dict[str, Any],
                  ctx: CallContext, state: StateView, read_only: bool, lim: Limits,
                  deadline: float) -> CallResult:
        c = ctx.caller
        wire_ctx = [c.user_id, c.role, c.security_level, ctx.height, ctx.tx_id,
                    ctx.timestamp_ms, code.name]
        send_source = code.code_hash not in w.known
        prefix = namespace_prefix(code.name)
        msg = ["call", code.name, code.code_hash, code.source if send_source else None, fn,
               kwargs, wire_ctx, read_only, lim.to_wire()]
        write_frame(w.wfd, msg)
        while True:
            m = read_frame(w.rfd, deadline)
            if type(m) is not list or not m:
                raise _Breach("malformed frame")
            kind = m[0]
            if kind == "done":
                w.known.add(code.code_hash)
                return self._result(m, prefix)
            if kind == "need":
                msg[3] = code.source
                write_frame(w.wfd, msg)
                continue
            write_frame(w.wfd, ["r", self._answer(m, state, prefix)])

    @staticmethod
    def _answer(m: list[Any], state: StateView, prefix: bytes) -> Any:
        kind = m[0]
        if kind == "get" and len(m) == 2 and type(m[1]) is bytes and m[1].startswith(prefix):
            return state.get(m[1])
        if kind == "scan" and len(m) == 4 and type(m[1]) is bytes and m[1].startswith(prefix) \
                and (m[2] is None or (type(m[2]) is bytes and m[2].startswith(prefix))) \
                and type(m[3]) is int and 0 < m[3] <= 2 * _MAX_LIMIT + 1024:
            return [[k, v] for k, v in state.scan(m[1], m[2], m[3]) if k.startswith(prefix)]
        if kind == "record" and len(m) == 2 and type(m[1]) is str:
            return state.record(m[1])
        if kind == "index" and len(m) == 5 and type(m[1]) is str and type(m[2]) is str \
                and (m[3] is None or type(m[3]) is str) and type(m[4]) is int \
                and 0 < m[4] <= _MAX_LIMIT:
            return list(state.index(m[1], m[2], m[3], m[4]))
        raise _Breach(f"bad request {str(kind)[:20]!r}")

    @staticmethod
    def _result(m: list[Any], prefix: bytes) -> CallResult:
        if len(m) != 7:
            raise _Breach("bad result")
        _, ok, value, error, steps, writes, events = m
        if ok and not all(type(k) is bytes and k.startswith(prefix)
                          and (v is None or type(v) is bytes) for k, v in writes):
            raise _Breach("write outside the namespace")
        if error is not None and (type(error) is not str or "\n" in error):
            raise _Breach("bad error text")
        return CallResult(
            ok=bool(ok), value=value, error=error, steps=int(steps),
            writes=tuple((k, v) for k, v in writes),
            events=tuple((str(n), d) for n, d in events),
        )
