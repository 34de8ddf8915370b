"""Downloading a record: one round trip for the record and its ciphertext, checked here.

``GET /records/{id}/content`` brings the record (keys, CID) and the ciphertext at once; the
node sends its stored blocks without hashing them again (``X-Pie-Verify: client``) because
this client checks every byte itself, twice over: each chunk authenticates under the
record's key (AES-GCM), and the whole ciphertext must hash to the CID the chain records.
A small record is received whole through ``rawget`` (straight into one buffer) while its
keys are opened; anything ``rawget`` does not handle goes through aiohttp, streamed.

Who checks what: for a record of up to ``WHOLE`` bytes (64 MiB), this client checks the
CID and every chunk and the node sends its copy unchecked (with sendfile); a larger one
streams with the node checking every block (as ``GET /files`` always does, in its worker
threads, on the other core) and this client every chunk. A download whose checks failed
here goes next to ``GET /files/{cid}`` (``decrypt_from_store``): the node then finds its
damaged copy and repairs it from a peer before serving it.

Must never: leave a partial or unchecked file at ``out``, or reuse a request signature.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from pienode.cli.client import RemoteError
from pienode.client.rawget import Unsupported
from pienode.client.session import Session, record_from_json
from pienode.client.transfer import (
    WHOLE,
    AtomicOutput,
    ContentMismatch,
    Progress,
    decrypt_buffer_to_file,
    decrypt_to_file,
)
from pienode.crypto import grants
from pienode.crypto.stream import StreamError
from pienode.encoding import unpack
from pienode.errors import Forbidden, PieError, ValidationError
from pienode.files.http import VERIFY_CLIENT, VERIFY_HEADER

#: Largest answer taken whole (the record's JSON and a file of up to ``WHOLE`` bytes).
LEAN_LIMIT = WHOLE + (1 << 20)


async def fetch_record(s: Session, record_id: str, out: Path) -> tuple[dict[str, Any], int | None, bytes | None]:
    """The record and, when its keys are sealed to me, its file decrypted into ``out``.

    Returns (record, plaintext bytes written or None, DEK or None): None bytes with a DEK
    when the file failed a check here (the caller asks again with ``decrypt_from_store``);
    no DEK when the keys are not sealed to me (the caller needs a grant).

    Raises:
        ValidationError: no such record. Forbidden / RemoteError: the node refused.
    """
    path = f"/records/{record_id}/content"
    raw = s.raw_getter()
    if raw is not None:
        output: list[AtomicOutput] = []
        try:
            # The output file is made while the node works on the request.
            async with raw.get(path, _headers(s, path), LEAN_LIMIT, lambda: output.append(AtomicOutput(out))) as ans:
                if ans.status != 200:
                    _refuse(ans.status, bytes(await ans.received(ans.total)), record_id)
                n = int.from_bytes(await ans.received(4), "big")
                rec = record_from_json(json.loads(bytes((await ans.received(4 + n))[4:])))
                if s.user_id not in rec["sealed_keys"]:
                    return rec, None, None
                dek = own_dek(s, rec)  # the rest of the answer arrives meanwhile
                ciphertext = (await ans.received(ans.total))[4 + n:]
                buf = ans.buf
            try:
                written = decrypt_buffer_to_file(ciphertext, dek, output.pop(), expect_cid=rec["cid"])
            except (StreamError, ContentMismatch):
                return rec, None, dek
            del ciphertext
            raw.give_back(buf)  # no view of it is left: the next download lands in it
            return rec, written, dek
        except Unsupported:
            pass  # the general way below, with a fresh signature
        finally:
            for o in output:  # not used: nothing is left behind
                o.discard()
    return await _fetch_streamed(s, record_id, path, out)


async def _fetch_streamed(s: Session, record_id: str, path: str, out: Path
                          ) -> tuple[dict[str, Any], int | None, bytes | None]:
    """The general way, for records larger than the lean path takes: the node checks every
    block as it streams them (in its worker threads, on the other core), this client every
    chunk (AES-GCM); the CID too when the record is small enough to take whole."""
    headers = s.headers("GET", path, None)
    async with s.client.session.get(s.client.base + path, headers=headers) as resp:
        if resp.status != 200:
            _refuse(resp.status, await resp.read(), record_id)
        head = await resp.content.readexactly(4)
        rec = record_from_json(json.loads(await resp.content.readexactly(int.from_bytes(head, "big"))))
        if s.user_id not in rec["sealed_keys"]:
            return rec, None, None  # the body is left unread, the connection dropped
        dek = own_dek(s, rec)
        progress = Progress("download+decrypt", rec["size"])
        try:
            cid = rec["cid"] if rec["size"] <= WHOLE else None  # larger: checked by the node as it reads
            size = await decrypt_to_file(resp.content.iter_any(), dek, out, progress, expect_cid=cid,
                                         size=rec["size"])
            return rec, size, dek
        except (StreamError, ContentMismatch, aiohttp.ClientPayloadError):
            return rec, None, dek
        finally:
            progress.close()


def _headers(s: Session, path: str) -> dict[str, str]:
    return {**s.headers("GET", path, None), VERIFY_HEADER: VERIFY_CLIENT}


def _refuse(status: int, body: bytes, record_id: str) -> None:
    """Raise the error a non-200 answer to ``GET /records/{id}/content`` stands for."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    message = doc.get("error")
    if status == 404 and doc.get("kind") == "NotFound" and doc.get("record_id") == record_id:
        raise ValidationError(f"no record {record_id}")
    if status == 403:
        raise Forbidden(message or "refused")
    raise RemoteError(f"{message or body[:300].decode(errors='replace')} (HTTP {status})", status)


def own_dek(s: Session, rec: dict[str, Any]) -> bytes:
    """The DEK from my sealed copy of the record's delegating key (the kfrag signer, which
    only a grant needs, stays sealed)."""
    sealed_dsk, _ = unpack(rec["sealed_keys"][s.user_id])
    return grants.open_record_dek(s.enc_sk, sealed_dsk, rec["record_id"], rec["version"], rec["capsule"])


async def decrypt_from_store(s: Session, cid: str, stored_size: int, dek: bytes, out: Path) -> int:
    """Download ``cid`` with the node checking every block, decrypt it into ``out``, and
    check the CID and every chunk here too."""
    path = f"/files/{cid}"
    progress = Progress("download+decrypt", stored_size)
    try:
        async with s.client.session.get(s.client.base + path, headers=s.headers("GET", path, None)) as resp:
            if resp.status != 200:
                raise PieError(f"the node could not serve {cid} (HTTP {resp.status})")
            return await decrypt_to_file(resp.content.iter_any(), dek, out, progress, expect_cid=cid,
                                         size=stored_size)
    finally:
        progress.close()
