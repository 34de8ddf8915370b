"""The ``ctx`` door: a contract's only way to the world, fenced to its own namespace.

Owns key validation and mapping (contract-visible str keys -> ``namespace_prefix(name) +
ascii bytes``), the write overlay (read-your-writes within a call; the node applies the
overlay only when the call succeeds and is not read-only), events, and the conversion of
values crossing the door (JSON-like only, canonical msgpack, size-checked). Must never hand
the contract a key outside its namespace, a raw ``StateView`` or a bytes object.
"""

from __future__ import annotations

import re
from typing import Any

from pienode.encoding import pack, unpack
from pienode.errors import EncodingError
from pienode.execution import runtime_tables as T
from pienode.execution.methods import METHODS
from pienode.execution.runtime import (
    FIELD_TYPES,
    BadStateAccess,
    ContractFailed,
    ReadOnlyViolation,
    Runtime,
    SizeLimitExceeded,
)
from pienode.execution.values import export_value, import_value

KEY_RE = re.compile(r"[A-Za-z0-9_.:/@+=-]*")
INDEX_NAMES = frozenset({"patient", "hospital", "type"})
MAX_SCAN = 1000
_CB = T.CTX_BYTES_PER_STEP


class ContractCaller:
    """What ``ctx.caller`` shows: the certified identity, read-only."""

    __slots__ = ("user_id", "role", "security_level")
    _contract_fields = T.CALLER_FIELDS

    def __init__(self, user_id: str, role: str, security_level: str) -> None:
        self.user_id = user_id
        self.role = role
        self.security_level = security_level


class Ctx:
    """One call's context. Underscore attributes are unreachable from contract code."""

    __slots__ = ("caller", "height", "tx_id", "timestamp", "contract", "_rt", "_state",
                 "_prefix", "_read_only", "_overlay", "_events", "_limits")
    _contract_fields = T.CTX_FIELDS | T.CTX_METHODS

    def __init__(self, rt: Runtime, call: Any, state: Any, prefix: bytes,
                 read_only: bool) -> None:
        c = call.caller
        self.caller = ContractCaller(c.user_id, c.role, c.security_level)
        self.height = call.height
        self.tx_id = call.tx_id
        self.timestamp = call.timestamp_ms
        self.contract = call.contract
        self._rt = rt
        self._state = state
        self._prefix = prefix
        self._read_only = read_only
        self._overlay: dict[bytes, bytes | None] = {}
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._limits = rt.limits

    # ---- keys --------------------------------------------------------------------------
    def _key(self, key: Any, *, prefix: bool = False) -> bytes:
        if type(key) is not str:
            raise BadStateAccess("state keys are str")
        if len(key) > self._limits.max_key_len or (not key and not prefix):
            raise BadStateAccess(f"state key length must be 1..{self._limits.max_key_len}")
        if not KEY_RE.fullmatch(key) or ".." in key or key.startswith("/"):
            raise BadStateAccess(f"bad state key {key[:40]!r} (allowed: A-Z a-z 0-9 _ . : / "
                                 "@ + = -, no '..', no leading '/')")
        return self._prefix + key.encode("ascii")

    def _writable(self) -> None:
        if self._read_only:
            raise ReadOnlyViolation("state writes are not allowed in a read-only call")

    # ---- state -------------------------------------------------------------------------
    def get(self, key: Any, default: Any = None) -> Any:
        k = self._key(key)
        self._rt.charge(T.CTX_CALL)
        if k in self._overlay:
            raw = self._overlay[k]
        else:
            raw = self._state.get(k)
        if raw is None:
            return default
        self._rt.charge(len(raw) // _CB)
        return import_value(unpack(raw, strict=False))

    def put(self, key: Any, value: Any) -> None:
        self._writable()
        k = self._key(key)
        self._rt.charge(T.CTX_CALL)
        try:
            raw = pack(export_value(self._rt, value))
        except EncodingError as exc:
            raise BadStateAccess(f"value cannot be stored: {exc.message}") from None
        if len(raw) > self._limits.max_value_bytes:
            raise SizeLimitExceeded(
                f"state value of {len(raw)} bytes exceeds {self._limits.max_value_bytes}")
        self._rt.charge(len(raw) // _CB)
        self._note_write(k)
        self._overlay[k] = raw

    def delete(self, key: Any) -> None:
        self._writable()
        k = self._key(key)
        self._rt.charge(T.CTX_CALL)
        self._note_write(k)
        self._overlay[k] = None

    def _note_write(self, k: bytes) -> None:
        if k not in self._overlay and len(self._overlay) >= self._limits.max_writes:
            raise SizeLimitExceeded(f"more than {self._limits.max_writes} state writes")

    def scan(self, prefix: Any = "", start_after: Any = None, limit: Any = 50) -> list[Any]:
        p = self._key(prefix, prefix=True)
        after = None if start_after is None else self._key(start_after)
        if type(limit) is not int or not 1 <= limit <= MAX_SCAN:
            raise BadStateAccess(f"scan limit must be an int in 1..{MAX_SCAN}")
        self._rt.charge(T.CTX_CALL + limit)
        hidden = sum(1 for k, v in self._overlay.items() if v is None and k.startswith(p))
        got = dict(self._state.scan(p, after, limit + hidden))
        for k, v in self._overlay.items():
            if k.startswith(p) and (after is None or k > after):
                got[k] = v
        keys = sorted(k for k, v in got.items() if v is not None)[:limit]
        n = len(self._prefix)
        out = []
        for k in keys:
            raw = got[k]
            self._rt.charge(len(raw) // _CB + 1)
            out.append([k[n:].decode("ascii"), import_value(unpack(raw, strict=False))])
        return out

    # ---- ledger views ------------------------------------------------------------------
    def record(self, record_id: Any) -> Any:
        if type(record_id) is not str or not 0 < len(record_id) <= 200:
            raise BadStateAccess("record id must be a str of 1..200 characters")
        self._rt.charge(T.CTX_CALL)
        rec = self._state.record(record_id)
        if rec is None:
            return None
        v = import_value(rec)
        self._rt.walk(v)
        return v

    def index(self, name: Any, value: Any, after: Any = None, limit: Any = 50) -> list[str]:
        if type(name) is not str or not (name in INDEX_NAMES or (
                name.startswith("summary:") and 8 < len(name) <= 72)):
            raise BadStateAccess("index name must be patient, hospital, type or summary:<field>")
        if type(value) is not str or len(value) > 200:
            raise BadStateAccess("index value must be a str of at most 200 characters")
        if after is not None and (type(after) is not str or len(after) > 200):
            raise BadStateAccess("index cursor must be a str")
        if type(limit) is not int or not 1 <= limit <= MAX_SCAN:
            raise BadStateAccess(f"index limit must be an int in 1..{MAX_SCAN}")
        self._rt.charge(T.CTX_CALL + limit)
        ids = self._state.index(name, value, after, limit)
        out = [str(i) for i in list(ids)[:limit]]
        self._rt.charge(len(out))
        return out

    # ---- effects -----------------------------------------------------------------------
    def emit(self, name: Any, data: Any = None) -> None:
        if type(name) is not str or not 0 < len(name) <= 64:
            raise BadStateAccess("event name must be a str of 1..64 characters")
        if len(self._events) >= self._limits.max_events:
            raise SizeLimitExceeded(f"more than {self._limits.max_events} events")
        self._rt.charge(T.CTX_CALL)
        payload = export_value(self._rt, {} if data is None else data)
        if type(payload) is not dict:
            raise BadStateAccess("event data must be a dict")
        if len(pack(payload)) > self._limits.max_value_bytes:
            raise SizeLimitExceeded("event data too large")
        self._events.append((name, payload))

    def fail(self, message: Any = "failed") -> None:
        text = message if type(message) is str else "failed"
        text = " ".join(text.split())[:200]
        raise ContractFailed(text)

    # ---- for the interpreter -----------------------------------------------------------
    def take_writes(self) -> tuple[tuple[bytes, bytes | None], ...]:
        return tuple(sorted(self._overlay.items()))

    def take_events(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        return tuple(self._events)


def _ctx_method(name: str) -> Any:
    def h(rt: Runtime, obj: Ctx, *args: Any, **kw: Any) -> Any:
        return getattr(obj, name)(*args, **kw)

    return h


FIELD_TYPES[Ctx] = frozenset(Ctx._contract_fields)
FIELD_TYPES[ContractCaller] = frozenset(ContractCaller._contract_fields)
for _n in T.CTX_METHODS:
    METHODS[(Ctx, _n)] = _ctx_method(_n)
