"""The ledger's key layout in the node's LevelDB (layout version ``LAYOUT_VERSION``).

    M<name>                  meta: layout version, chain id, genesis hash, head height
    B<height:8 BE>           one committed block (header, txs, receipts, certificate)
    S<state key>             world state, covered by the state root:
        u/<user_id>            user certificate
        r/<record_id>          record (latest version)
        t/<tx_id>              committed transaction -> (height, index)
        c/<name>               deployed contract code
        cs\\0<name>\\0<key>      a contract's own namespace (pienode.execution.namespace_prefix)
        i/<index>\\0<value>\\0<record_id>   record indexes (patient, hospital, type, summary:<field>)
    C<...>                   consensus replica's persisted votes (see pienode.consensus)
    P<...>                   this hospital's private registry (user id -> real name; off chain)

Everything under ``S`` is derived by executing blocks, so ``pienode verify`` can replay the
chain into memory and compare every key.
"""

from __future__ import annotations

import struct

LAYOUT_VERSION = 1

META = b"M"
BLOCK = b"B"
STATE = b"S"
CONSENSUS = b"C"
PRIVATE = b"P"

META_LAYOUT = META + b"layout"
META_CHAIN = META + b"chain"
META_GENESIS = META + b"genesis"
META_HEAD = META + b"head"


def block_key(height: int) -> bytes:
    return BLOCK + struct.pack(">Q", height)


def height_of_block_key(key: bytes) -> int:
    return struct.unpack(">Q", key[1:9])[0]


#: State keys of user certificates (``user_key``).
USER_PREFIX = b"u/"


def user_key(user_id: str) -> bytes:
    return USER_PREFIX + user_id.encode()


def record_key(record_id: str) -> bytes:
    return b"r/" + record_id.encode()


def tx_key(tx_id: bytes) -> bytes:
    return b"t/" + tx_id


def code_key(name: str) -> bytes:
    return b"c/" + name.encode()


def index_prefix(index: str, value: str) -> bytes:
    return b"i/" + index.encode() + b"\x00" + value.encode() + b"\x00"


def index_key(index: str, value: str, record_id: str) -> bytes:
    # One encode of the joined text: UTF-8 of a concatenation is the concatenation of the
    # parts' UTF-8 (several index keys per record on the commit path).
    return b"i/" + f"{index}\x00{value}\x00{record_id}".encode()
