"""A spy on O_DIRECT for tests of ``pienode.directio`` users: counts the opens that ask for it,
and can refuse them with EINVAL as a filesystem without O_DIRECT (tmpfs) does."""

from __future__ import annotations

import errno
import os

import pytest

from pienode import directio


def spy_direct(monkeypatch: pytest.MonkeyPatch, refused: str | None = None, *,
               reads_only: bool = False) -> list[int]:
    """Returns the flags of every O_DIRECT open from now on (for this test). ``refused``:
    "open" fails those opens with EINVAL, "write" fails writes to the fds they gave.
    ``reads_only``: opens for writing are neither counted nor refused."""
    real_open, real_pwrite = os.open, os.pwrite
    direct_fds: set[int] = set()
    opened: list[int] = []

    def fake_open(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
        if not flags & directio.O_DIRECT or reads_only and flags & (os.O_WRONLY | os.O_RDWR):
            return real_open(path, flags, *args, **kw)
        opened.append(flags)
        if refused == "open":
            raise OSError(errno.EINVAL, "Invalid argument")
        fd = real_open(path, flags, *args, **kw)
        direct_fds.add(fd)
        return fd

    def fake_pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
        if fd in direct_fds and refused == "write":
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "pwrite", fake_pwrite)
    return opened
