"""Genesis: the consortium's founding document, identical on every node.

It fixes the chain id, the consortium key that signs hospital certificates and contract
deployments, the hospitals (certificates with keys and addresses), the chain parameters,
the security-level table of the design paper's Table 5, the role-to-level table, and the
contracts deployed at height 0. Stored as ``genesis.json`` in every node's home; its hash
(over the canonical encoding) is recorded in the ledger, so a node refuses to open a
ledger that was made for another genesis.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pienode.crypto.keys import PublicKey
from pienode.encoding import digest
from pienode.errors import ConfigError, ValidationError
from pienode.identity.certs import NodeCert
from pienode.identity.levels import DEFAULT_DATA_TYPE_LEVELS, DEFAULT_ROLE_LEVELS, LEVELS, ROLES


@dataclass(frozen=True, slots=True)
class ChainParams:
    max_block_bytes: int = 1_000_000
    max_block_txs: int = 4000
    batch_timeout_ms: int = 2
    checkpoint_interval: int = 64
    view_change_timeout_ms: int = 2000
    request_timeout_ms: int = 2000
    max_tx_bytes: int = 65_536
    max_clock_skew_ms: int = 300_000
    #: How many hospitals hold every stored file (0 means all of them).
    file_replication: int = 0


@dataclass(frozen=True, slots=True)
class ContractSource:
    name: str
    source: str


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: str
    created_at_ms: int
    consortium_key: bytes
    nodes: tuple[NodeCert, ...]
    params: ChainParams = field(default_factory=ChainParams)
    data_type_levels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_DATA_TYPE_LEVELS))
    role_levels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ROLE_LEVELS))
    contracts: tuple[ContractSource, ...] = ()
    #: What every node's contract engine must match (interpreter minor version, Unicode
    #: tables, cost table), so contracts answer alike everywhere; empty: not pinned.
    engine: dict[str, str] = field(default_factory=dict)
    #: ``nodes`` by id (derived; asked for every transaction's sender).
    _by_id: dict[str, NodeCert] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The first certificate of an id wins, as the scan it replaces did (``check``
        # refuses duplicates anyway).
        by_id: dict[str, NodeCert] = {}
        for n in self.nodes:
            by_id.setdefault(n.node_id, n)
        object.__setattr__(self, "_by_id", by_id)

    # -- derived -------------------------------------------------------------------------

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.node_id for n in self.nodes)

    @property
    def f(self) -> int:
        return (len(self.nodes) - 1) // 3

    def node(self, node_id: str) -> NodeCert:
        found = self._by_id.get(node_id)
        if found is None:
            raise ValidationError(f"unknown hospital node {node_id!r}")
        return found

    def has_node(self, node_id: str) -> bool:
        return node_id in self._by_id

    def hash(self) -> bytes:
        return digest(self.to_canonical())

    # -- (de)serialisation ---------------------------------------------------------------

    def to_canonical(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "created_at_ms": self.created_at_ms,
            "consortium_key": self.consortium_key,
            "nodes": [n.to_dict() for n in self.nodes],
            "params": asdict(self.params),
            "data_type_levels": dict(self.data_type_levels),
            "role_levels": dict(self.role_levels),
            "contracts": [asdict(c) for c in self.contracts],
            "engine": dict(self.engine),
        }

    def to_json(self) -> str:
        return json.dumps(_hexify(self.to_canonical()), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Genesis":
        try:
            d = json.loads(text)
            nodes = tuple(NodeCert.from_dict(_unhex_node(n)) for n in d["nodes"])
            known = {f.name for f in fields(ChainParams)}
            unknown = set(d.get("params", {})) - known
            if unknown:
                raise ConfigError(f"genesis params: unknown keys {sorted(unknown)}")
            g = cls(
                chain_id=d["chain_id"],
                created_at_ms=int(d["created_at_ms"]),
                consortium_key=bytes.fromhex(d["consortium_key"]),
                nodes=nodes,
                params=ChainParams(**d.get("params", {})),
                data_type_levels=dict(d["data_type_levels"]),
                role_levels=dict(d["role_levels"]),
                contracts=tuple(ContractSource(**c) for c in d.get("contracts", [])),
                engine={k: str(v) for k, v in d.get("engine", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed genesis: {exc}") from None
        g.check()
        return g

    @classmethod
    def load(cls, path: Path) -> "Genesis":
        try:
            return cls.from_json(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read genesis {path}: {exc.strerror}") from None

    def check(self) -> None:
        """Raises ConfigError unless every certificate and table is consistent."""
        ca = PublicKey.from_bytes(self.consortium_key)
        if not self.nodes:
            raise ConfigError("genesis has no hospital nodes")
        if len(set(self.node_ids)) != len(self.nodes):
            raise ConfigError("genesis has duplicate node ids")
        for n in self.nodes:
            try:
                n.check(ca)
            except ValidationError as exc:
                raise ConfigError(str(exc)) from None
        for t, lvl in self.data_type_levels.items():
            if lvl not in LEVELS:
                raise ConfigError(f"data type {t}: unknown level {lvl!r}")
        for r, lvl in self.role_levels.items():
            if r not in ROLES or lvl not in LEVELS:
                raise ConfigError(f"role table: bad entry {r!r} -> {lvl!r}")


def new_chain_id() -> str:
    return "pie-" + secrets.token_hex(6)


def _hexify(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: _hexify(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_hexify(v) for v in obj]
    return obj


def _unhex_node(d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    for k in ("sign_key", "enc_key", "signature"):
        if k in out:
            out[k] = bytes.fromhex(out[k])
    return out
