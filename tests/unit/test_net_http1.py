"""Response parsing for the lean HTTP clients (pienode/net/http1.py)."""

from __future__ import annotations

import asyncio

import pytest

from pienode.net.http1 import ClosedBeforeAnswer, parse_response_head, read_response


def reader_of(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


def test_head_with_length_and_keep_alive() -> None:
    head = parse_response_head(b"HTTP/1.1 201 Created\r\nContent-Length: 12\r\nX-Pie: a\r\n\r\n")
    assert (head.status, head.content_length, head.keep_alive) == (201, 12, True)
    assert head.headers["x-pie"] == "a" and not head.chunked


def test_connection_close_and_http_1_0_are_not_kept_alive() -> None:
    assert not parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
    assert not parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2x0 OK\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"])
def test_malformed_or_incomplete_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response_head(raw)


async def test_reads_a_length_delimited_body_and_no_further() -> None:
    r = reader_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 next", eof=False)
    head, body = await read_response(r)
    assert (head.status, body) == (200, b"hello")
    assert await r.read(4) == b"HTTP"  # the next answer is left in the stream


async def test_reads_a_chunked_body() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n"
    head, body = await read_response(reader_of(raw))
    assert head.chunked and body == b"abcde"


async def test_a_connection_closed_before_the_answer_is_told_apart() -> None:
    with pytest.raises(ClosedBeforeAnswer):
        await read_response(reader_of(b""))
    with pytest.raises(EOFError) as info:
        await read_response(reader_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"))
    assert not isinstance(info.value, ClosedBeforeAnswer)
