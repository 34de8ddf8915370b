"""Content identifiers: CIDv1 strings and bytes, exactly as IPFS writes them.

Owns: parsing and formatting CIDv1 (multibase base32 lower ``b``, unsigned-varint version
and codec, sha2-256 multihash) for the two codecs the file store makes: ``raw`` (0x55, a
leaf's bytes) and ``dag-pb`` (0x70, an internal UnixFS node).

Must never: accept a CID it cannot verify (only sha2-256 digests of 32 bytes are accepted,
since every block is re-hashed on read), touch disk, or depend on anything above it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from dataclasses import dataclass

from pienode.errors import EncodingError

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
DIGEST_LEN = 32
CODECS = (RAW, DAG_PB)

#: Longest CID string we ever parse; a real one is 59 characters.
MAX_CID_CHARS = 128


class CidError(EncodingError):
    """A CID string or byte form that is malformed or of a kind this store cannot hold."""


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128, as multiformats and protobuf both use."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Read one unsigned varint at ``pos``; returns (value, next position).

    Raises:
        CidError: truncated, or longer than 9 bytes (multiformats' limit, which is also
            enough for every protobuf field we read).
    """
    value = 0
    shift = 0
    for i in range(9):
        if pos + i >= len(buf):
            raise CidError("truncated varint")
        b = buf[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and i > 0:
                # Non-minimal encodings would give one value two byte forms.
                raise CidError("non-minimal varint")
            return value, pos + i + 1
        shift += 7
    raise CidError("varint too long")


@dataclass(frozen=True, slots=True)
class CID:
    """A CIDv1 over a sha2-256 digest. ``codec`` is RAW or DAG_PB."""

    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise CidError("unsupported codec", codec=self.codec)
        if len(self.digest) != DIGEST_LEN:
            raise CidError("digest must be 32 bytes")

    @classmethod
    def of(cls, codec: int, block: bytes | memoryview) -> "CID":
        """The CID of ``block`` (its sha2-256) under ``codec``."""
        return cls(codec, hashlib.sha256(block).digest())

    def to_bytes(self) -> bytes:
        """Binary CID: version 1, codec, multihash (code, length, digest)."""
        return b"\x01" + encode_varint(self.codec) + bytes((SHA2_256, DIGEST_LEN)) + self.digest

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> "CID":
        """Parse a binary CIDv1; the whole input must be consumed.

        Raises:
            CidError: not a CIDv1 over a 32-byte sha2-256 digest with a supported codec.
        """
        version, pos = decode_varint(data, 0)
        if version != 1:
            raise CidError("only CIDv1 is supported", version=version)
        codec, pos = decode_varint(data, pos)
        code, pos = decode_varint(data, pos)
        length, pos = decode_varint(data, pos)
        if code != SHA2_256 or length != DIGEST_LEN:
            raise CidError("only sha2-256 multihashes are supported")
        if len(data) - pos != DIGEST_LEN:
            raise CidError("multihash length does not match its digest")
        return cls(codec, bytes(data[pos:]))

    def __str__(self) -> str:
        return "b" + base64.b32encode(self.to_bytes()).decode("ascii").lower().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> "CID":
        """Parse a CIDv1 string in base32 lower (``b...``), as ``ipfs add --cid-version=1``
        prints it.

        Raises:
            CidError: anything else (other multibases, CIDv0, bad characters, bad lengths).
        """
        if not isinstance(text, str) or not 2 <= len(text) <= MAX_CID_CHARS:
            raise CidError("malformed CID")
        # Cached for plain strings only (a str subclass could compare equal to another).
        return _parse(text) if cls is CID and type(text) is str else cls._parse_uncached(text)

    @classmethod
    def _parse_uncached(cls, text: str) -> CID:
        if text[0] != "b":
            raise CidError("CID must be CIDv1 in base32 (b...)")
        body = text[1:]
        if not body.isascii() or body != body.lower() or not body.isalnum():
            raise CidError("malformed CID")
        pad = "=" * (-len(body) % 8)
        try:
            raw = base64.b32decode(body.upper() + pad)
        except (ValueError, binascii.Error):
            raise CidError("malformed CID") from None
        cid = cls.from_bytes(raw)
        # Refuse strings with non-zero trailing bits: two spellings of one CID.
        if str(cid) != text:
            raise CidError("malformed CID")
        return cid

    @property
    def is_raw(self) -> bool:
        return self.codec == RAW

    def matches(self, block: bytes | memoryview) -> bool:
        """Whether ``block`` hashes to this CID's digest."""
        return hashlib.sha256(block).digest() == self.digest


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> CID:
    # The same few CIDs are parsed again and again (a record's CID on every download of
    # it: ~0.12 ms each, the base32 round trip that refuses non-canonical spellings); a
    # CID is immutable and a string always parses to the same one. Failures are not kept.
    return CID._parse_uncached(text)


def parse_cid(text: str) -> CID:
    """Shorthand for ``CID.parse``."""
    return CID.parse(text)
