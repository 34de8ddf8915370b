"""DAG-PB nodes carrying UnixFS File data: the internal blocks of a file's DAG.

Owns: the byte-exact encoding kubo writes for an internal node of a file added with
``--cid-version=1`` (raw leaves), and a strict decoder for the same nodes when they come
back from disk or from a peer.

Byte rules (DAG-PB spec, UnixFS spec, go-unixfs behaviour):
- PBNode: every Link (field 2) comes before Data (field 1), whatever the field numbers say.
- PBLink: Hash (1, binary CID), Name (2, written even when empty), Tsize (3).
- UnixFS Data: Type (1) = File (2); no Data (2) because leaves are raw; filesize (3) always
  written; each blocksize (4) written as its own field, not packed.
- Tsize of a link = the child block's length plus the Tsize of the child's own links.

Must never: decode anything it does not fully understand (peers' blocks are untrusted),
or touch disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from pienode.files.cid import CID, CidError, decode_varint, encode_varint

UNIXFS_FILE = 2
MAX_LINKS = 174


class DagError(CidError):
    """A dag-pb / UnixFS block that is malformed or not a File node we can read."""


@dataclass(frozen=True, slots=True)
class Link:
    """One child of an internal node: its CID, Tsize and the file bytes beneath it."""

    cid: CID
    tsize: int
    filesize: int


@dataclass(frozen=True, slots=True)
class FileNode:
    """A decoded internal node: its links and UnixFS sizes (``blocksizes[i]`` belongs to
    ``links[i]``)."""

    links: tuple[Link, ...]
    filesize: int


def _field(num: int, wire: int) -> bytes:
    return encode_varint((num << 3) | wire)


def _bytes_field(num: int, value: bytes) -> bytes:
    return _field(num, 2) + encode_varint(len(value)) + value


def encode_node(links: list[Link] | tuple[Link, ...]) -> bytes:
    """The dag-pb block of an internal UnixFS File node over ``links`` (1..174)."""
    if not 1 <= len(links) <= MAX_LINKS:
        raise ValueError("an internal node holds 1..174 links")
    out = bytearray()
    total = 0
    for link in links:
        body = (
            _bytes_field(1, link.cid.to_bytes())
            + _bytes_field(2, b"")
            + _field(3, 0)
            + encode_varint(link.tsize)
        )
        out += _bytes_field(2, body)
        total += link.filesize
    data = bytearray(_field(1, 0) + encode_varint(UNIXFS_FILE))
    data += _field(3, 0) + encode_varint(total)
    for link in links:
        data += _field(4, 0) + encode_varint(link.filesize)
    out += _bytes_field(1, bytes(data))
    return bytes(out)


def _read_fields(buf: bytes | memoryview) -> list[tuple[int, int, int | memoryview]]:
    """Split a protobuf message into (field, wire type, value) in order; only varint and
    length-delimited wire types are legal in dag-pb and UnixFS."""
    view = memoryview(buf)
    pos = 0
    fields: list[tuple[int, int, int | memoryview]] = []
    while pos < len(view):
        key, pos = decode_varint(view, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise DagError("protobuf field number 0")
        if wire == 0:
            value, pos = decode_varint(view, pos)
            fields.append((num, wire, value))
        elif wire == 2:
            length, pos = decode_varint(view, pos)
            if pos + length > len(view):
                raise DagError("truncated protobuf field")
            fields.append((num, wire, view[pos : pos + length]))
            pos += length
        else:
            raise DagError("unsupported protobuf wire type", wire=wire)
    return fields


def decode_node(block: bytes | memoryview) -> FileNode:
    """Decode an internal File node as ``encode_node`` writes it (and kubo reads it).

    Raises:
        DagError: malformed, not a UnixFS File, carrying inline data, or whose blocksizes
            do not line up with its links or its filesize.
    """
    links_raw: list[memoryview] = []
    data: memoryview | None = None
    for num, wire, value in _read_fields(block):
        if num == 2 and wire == 2:
            if data is not None:
                raise DagError("dag-pb link after Data")
            assert isinstance(value, memoryview)
            links_raw.append(value)
        elif num == 1 and wire == 2 and data is None:
            assert isinstance(value, memoryview)
            data = value
        else:
            raise DagError("unexpected dag-pb field", field=num)
    if data is None or not links_raw or len(links_raw) > MAX_LINKS:
        raise DagError("not an internal UnixFS File node")
    ftype = filesize = None
    blocksizes: list[int] = []
    for num, wire, value in _read_fields(data):
        if num == 1 and wire == 0:
            ftype = value
        elif num == 3 and wire == 0:
            filesize = value
        elif num == 4 and wire == 0:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif num == 2 and wire == 2 and len(value) == 0:  # type: ignore[arg-type]
            continue
        else:
            raise DagError("unexpected UnixFS field", field=num)
    if ftype != UNIXFS_FILE or filesize is None:
        raise DagError("not a UnixFS File node")
    if len(blocksizes) != len(links_raw) or sum(blocksizes) != filesize:
        raise DagError("UnixFS blocksizes do not match links or filesize")
    links = []
    for raw, size in zip(links_raw, blocksizes):
        cid = None
        tsize = None
        for num, wire, value in _read_fields(raw):
            if num == 1 and wire == 2 and cid is None:
                assert isinstance(value, memoryview)
                cid = CID.from_bytes(value)
            elif num == 2 and wire == 2:
                continue
            elif num == 3 and wire == 0:
                assert isinstance(value, int)
                tsize = value
            else:
                raise DagError("unexpected dag-pb link field", field=num)
        if cid is None or tsize is None:
            raise DagError("dag-pb link without Hash or Tsize")
        links.append(Link(cid, tsize, size))
    return FileNode(tuple(links), filesize)
