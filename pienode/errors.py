"""The exception tree: one root, one base per subsystem, each carrying its data.

Rule: an error raised because of someone else's input (a client, a peer, a contract author)
derives from ``RemoteError`` in spirit: it is reported and counted, never allowed to stop the
node. A broken invariant of our own is a plain ``InternalError`` and stops the node loudly.
"""

from __future__ import annotations


class PieError(Exception):
    """Root of every error this package raises on purpose."""

    #: HTTP status the API maps this error to (one mapping, in ``pienode.api.errors``).
    status: int = 500

    def __init__(self, message: str, **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.message, "kind": type(self).__name__}
        out.update({k: v for k, v in self.data.items() if isinstance(v, (str, int, bool, type(None)))})
        return out


class InternalError(PieError):
    """Our own invariant broke. Never caught to keep going."""


class EncodingError(PieError):
    """Bytes that do not decode to what they claim to be."""

    status = 400


class CryptoError(PieError):
    """A signature, key or ciphertext that does not check out."""

    status = 400


class ValidationError(PieError):
    """A transaction or request that is well-formed but not acceptable."""

    status = 400


class ReplayError(ValidationError):
    """A transaction id that is already committed or already pending."""

    status = 409


class NotFound(PieError):
    status = 404


class Forbidden(PieError):
    status = 403


class TooLarge(PieError):
    status = 413


class ConfigError(PieError):
    """A configuration file or value that cannot be used (unknown key, bad type)."""

    status = 500


class StorageError(PieError):
    """The key-value store or file store failed or holds something inconsistent."""


class ConsensusError(PieError):
    """Raised only for our own broken consensus invariants; peers' bad messages are discarded."""


class NetError(PieError):
    """A peer link failed (handshake, framing, size)."""


class ContractError(PieError):
    """A contract was refused at deploy time or failed deterministically at run time."""

    status = 422


class FileStoreError(PieError):
    """The content-addressed file store refused or could not serve something."""
