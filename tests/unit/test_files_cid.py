"""CID strings, the dag-pb codec and the DAG builder's shape, without any reference tool."""

from __future__ import annotations

import hashlib
import os

import pytest

from pienode.files.cid import CID, DAG_PB, RAW, CidError, decode_varint, encode_varint
from pienode.files.dagpb import DagError, Link, decode_node, encode_node
from pienode.files.unixfs import CHUNK_SIZE, DagBuilder, Rechunker, cid_of_bytes, file_cid

EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_empty_file_is_raw_leaf_of_no_bytes() -> None:
    assert str(cid_of_bytes(b"")) == EMPTY_CID


def test_single_chunk_is_its_raw_leaf() -> None:
    data = b"x" * CHUNK_SIZE
    cid = cid_of_bytes(data)
    assert cid.codec == RAW
    assert cid.digest == hashlib.sha256(data).digest()
    assert str(cid).startswith("bafkrei")


def test_two_chunks_make_dag_pb_root() -> None:
    cid = cid_of_bytes(b"x" * (CHUNK_SIZE + 1))
    assert cid.codec == DAG_PB
    assert str(cid).startswith("bafybei")


def test_cid_roundtrip_and_bytes() -> None:
    cid = CID.parse(EMPTY_CID)
    assert str(cid) == EMPTY_CID
    assert CID.from_bytes(cid.to_bytes()) == cid
    assert cid.to_bytes()[:4] == bytes([1, 0x55, 0x12, 0x20])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "b",
        "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR",  # CIDv0: we only serve v1
        "B" + EMPTY_CID[1:].upper(),
        EMPTY_CID[:-1],
        EMPTY_CID + "a",
        EMPTY_CID[:-1] + "1",  # '1' is not base32
        EMPTY_CID[:-1] + "l",  # non-zero trailing bits
        "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA",  # base58btc multibase
        "b" + "a" * 200,
        "../../etc/passwd",
    ],
)
def test_malformed_cid_strings_are_refused(text: str) -> None:
    with pytest.raises(CidError):
        CID.parse(text)


def test_parsing_is_cached_per_exact_string_and_never_mixes_cids() -> None:
    a, b = cid_of_bytes(b"record a"), cid_of_bytes(b"record b")
    for _ in range(2):  # the second round is served from the cache
        assert CID.parse(str(a)) == a and CID.parse(str(b)) == b
    assert CID.parse(str(a)) is CID.parse(str(a))
    # A non-canonical spelling of a cached CID (non-zero trailing bits) is still refused.
    text = str(a)
    last = "abcdefghijklmnopqrstuvwxyz234567".index(text[-1])
    other = text[:-1] + "abcdefghijklmnopqrstuvwxyz234567"[last ^ 1]
    with pytest.raises(CidError):
        CID.parse(other)


def test_other_codec_or_hash_refused() -> None:
    digest = hashlib.sha256(b"").digest()
    with pytest.raises(CidError):
        CID(0x71, digest)  # dag-cbor
    blake = b"\x01\x55" + encode_varint(0xB220) + b"\x20" + digest
    with pytest.raises(CidError):
        CID.from_bytes(blake)


def test_varint_roundtrip_and_non_minimal() -> None:
    for n in (0, 1, 127, 128, 300, 2**32, 2**62):
        assert decode_varint(encode_varint(n), 0) == (n, len(encode_varint(n)))
    with pytest.raises(CidError):
        decode_varint(b"\x80\x00", 0)
    with pytest.raises(CidError):
        decode_varint(b"\x80", 0)


def test_dagpb_roundtrip_and_strictness() -> None:
    links = [Link(CID.of(RAW, bytes([i])), 1, 1) for i in range(5)]
    block = encode_node(links)
    node = decode_node(block)
    assert node.links == tuple(links)
    assert node.filesize == 5
    with pytest.raises(DagError):
        decode_node(block[:-1])
    with pytest.raises(DagError):
        decode_node(b"\x0a\x02\x08\x02")  # Data only, no links
    with pytest.raises(CidError):
        decode_node(b"\xff\xff\xff")


def test_builder_shape_at_link_boundary_holds_no_data() -> None:
    """174 leaves make one full node; 175 make a root over a full node and a one-leaf
    node (go-unixfs keeps the partial subtree at full height)."""
    leaf = CID.of(RAW, b"a")
    b = DagBuilder()
    emitted = []
    for _ in range(174):
        emitted += b.add_leaf_cid(leaf, 10)
    assert len(emitted) == 1  # the full node is emitted as soon as it is final
    b.add_leaf_cid(leaf, 10)
    root, size, last = b.finish()
    assert size == 1750
    assert len(last) == 2
    top = decode_node(last[-1][1])
    assert [lk.filesize for lk in top.links] == [1740, 10]
    assert top.links[0].cid == emitted[0][0]
    lower = decode_node(last[0][1])
    assert len(lower.links) == 1 and lower.links[0].cid == leaf
    assert top.links[1].tsize == len(last[0][1]) + 10
    assert root == last[-1][0] == CID.of(DAG_PB, last[-1][1])


def test_rechunker_any_split_same_cid() -> None:
    data = bytes(range(256)) * 3000  # 768,000 bytes: 3 chunks
    whole = cid_of_bytes(data)
    pieces = [data[i : i + 9999] for i in range(0, len(data), 9999)]
    assert file_cid(pieces) == (whole, len(data))
    r = Rechunker()
    out = []
    for p in pieces:
        out += r.feed(p)
    assert [len(c) for c in out] == [CHUNK_SIZE, CHUNK_SIZE]
    assert r.flush() == data[2 * CHUNK_SIZE :]


@pytest.mark.parametrize("piece", [1000, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 7, 3 * CHUNK_SIZE + 5])
def test_rechunker_chunks_keep_their_bytes_after_later_feeds(piece: int) -> None:
    """Straddling chunks are filled in buffers of their own: one handed out earlier must
    never change when later pieces arrive (a reused buffer would)."""
    data = os.urandom(5 * CHUNK_SIZE + 123)
    r = Rechunker()
    out = []
    for i in range(0, len(data), piece):
        out += r.feed(data[i : i + piece])
    tail = r.flush()
    assert tail == data[5 * CHUNK_SIZE :]
    assert [bytes(c) for c in out] == [data[i : i + CHUNK_SIZE] for i in range(0, 5 * CHUNK_SIZE, CHUNK_SIZE)]
    assert r.flush() is None
