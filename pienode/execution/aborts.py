"""The engine's own aborts: how a call ends when a budget, a limit or a rule says so.

All derive from ``BaseException`` through ``Abort``, so no ``except`` clause a contract may
write (it can only name ValueError, KeyError, ...) can swallow them. Each carries the
deterministic error class that starts the ``CallResult.error`` line.
"""

from __future__ import annotations


class Abort(BaseException):
    """Base of the engine's own aborts. BaseException: a contract's except cannot catch it."""

    kind = "InternalError"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class StepLimitExceeded(Abort):
    kind = "StepLimitExceeded"


class SizeLimitExceeded(Abort):
    kind = "SizeLimitExceeded"


class SandboxViolation(Abort):
    kind = "SandboxViolation"


class ContractFailed(Abort):
    kind = "ContractFailed"


class ReadOnlyViolation(Abort):
    kind = "ReadOnlyViolation"


class BadStateAccess(Abort):
    kind = "BadStateAccess"
