"""Buffers for the bulk data paths (file ingest, peer-link frames).

Owns: ``Parts``, a payload of several buffers sent back to back without being joined, and
``scratch``, a bytearray whose bytes are not zero-filled. ``bytearray(n)`` zero-fills,
and on a 1 GiB upload that fill costs about as much as the AES-GCM of the same bytes (issue 7).

Must never: be used for a buffer any byte of which could be read before it is written (its
initial bytes are whatever the allocator hands back, from this process's own memory).
"""

from __future__ import annotations

import ctypes
from typing import Callable


def _uninitialized_allocator() -> Callable[[int], bytearray]:
    try:
        fn = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:  # not CPython: the zero-filled kind is always correct
        return bytearray
    fn.restype = ctypes.py_object
    fn.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    return lambda n: fn(None, n)  # type: ignore[no-any-return]


#: ``scratch(n)``: a bytearray of ``n`` bytes left as they were in memory. Only for a buffer
#: every byte of which is written before any is read (a received frame, a sealed one, a leaf
#: being filled).
scratch = _uninitialized_allocator()


class Parts:
    """A payload made of several buffers that go out back to back, never joined in memory
    (a push frame: its header, then its blocks where they lie). ``len()`` is their total."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | bytearray | memoryview]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)
