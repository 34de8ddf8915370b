"""Decrypting an encrypted record held whole in one buffer (a download received at once).

``stream.decrypt_stream`` takes pieces of any size and assembles the chunks that straddle
them. A download received whole (``pienode.client.rawget``) has every chunk in place, so
here each chunk is authenticated and decrypted where it lies, with no assembly buffer. A
caller that drops each plaintext chunk before asking for the next (``del`` it in the loop)
lets one freed chunk's memory serve the next instead of fresh pages: measured here, 1 MB
decrypted and written to a file in 0.64 ms of CPU instead of 1.4 ms through
``decrypt_stream`` (page faults on fresh 256 KiB buffers were most of it).

Same format and guarantees as ``pienode.crypto.stream`` (this module only walks the chunks;
``StreamDecryptor`` checks them). Must never yield a chunk's plaintext before that chunk
authenticated, nor anything after a failed one.
"""

from __future__ import annotations

from collections.abc import Iterator

from pienode.crypto.stream import HEADER_SIZE, Buffer, StreamDecryptor, StreamError


def decrypt_buffer(key: bytes, data: Buffer) -> Iterator[bytes]:
    """Decrypt the encrypted stream ``data`` (header and every chunk), chunk by chunk.

    Yields each chunk's plaintext only after it authenticated. A caller that must not
    expose a partial record writes to a temporary file and keeps it only once this
    generator has finished without raising.

    Raises:
        StreamError: bad header, any tampering, reordering, splicing, truncation (no final
            chunk) or bytes after the final chunk, as ``stream.decrypt_stream`` does.
        CryptoError: a key that is not 32 bytes.
    """
    view = memoryview(data).cast("B")
    if len(view) < HEADER_SIZE:
        raise StreamError("truncated stream header")
    dec = StreamDecryptor(key, bytes(view[:HEADER_SIZE]))
    rest = view[HEADER_SIZE:]
    while True:
        need = dec.next_ciphertext_size()
        if len(rest) > need:  # more follows: this one is not the final chunk
            yield dec.decrypt_chunk(rest[:need], final=False)
            rest = rest[need:]
            continue
        try:
            last = dec.decrypt_chunk(rest, final=True)
        except StreamError:
            # As ``decrypt_stream`` says it: "truncated" rather than "tampered" when the
            # last chunk is a valid non-final one (the stream was cut at a chunk boundary).
            if len(rest) == need and dec.is_next_chunk(rest, final=False):
                raise StreamError(
                    "truncated stream: the final chunk is missing", chunk=dec.chunks_done + 1
                ) from None
            raise
        yield last
        return
