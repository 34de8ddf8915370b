"""Creating a consortium: keys, certificates, genesis and node homes.

Used by ``pienode cluster up`` (all hospitals on this machine) and ``pienode genesis``
(real hosts: each site then receives its own home directory). Secret keys are written
mode 0600 into ``HOME/keys/``; the consortium key, which signs hospital certificates and
contract deployments, goes to ``DIR/consortium/`` and should be kept offline.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from pienode.crypto.keys import PrivateKey
from pienode.identity.certs import NodeCert
from pienode.identity.genesis import ChainParams, ContractSource, Genesis, new_chain_id
from pienode.runtime.config import ApiConfig, NodeConfig, PeerConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared(*parts: str) -> Path:
    """A file of the checkout, or, once installed from a wheel, its copy in share/pienode."""
    here = REPO_ROOT.joinpath(*parts)
    if here.exists():
        return here
    return Path(sys.prefix, "share", "pienode", *parts)


TEMPLATE = _shared("genesis", "template.json")
CONTRACTS_DIR = _shared("contracts")


@dataclass(frozen=True, slots=True)
class HostSpec:
    node_id: str
    name: str
    host: str
    api_port: int
    peer_port: int
    listen_host: str = "127.0.0.1"


def write_secret(path: Path, key: PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.to_bytes().hex() + "\n")


def load_template(path: Path = TEMPLATE) -> dict:
    return json.loads(path.read_text())


def contract_sources(names: list[str], directory: Path = CONTRACTS_DIR) -> tuple[ContractSource, ...]:
    out = []
    for name in names:
        p = directory / f"{name}.py"
        if p.exists():
            out.append(ContractSource(name, p.read_text()))
    return tuple(out)


def engine_fingerprint() -> dict[str, str]:
    from pienode.execution import ContractEngine

    return {k: str(v) for k, v in ContractEngine.fingerprint().items()}


def hospital_names(n: int, template: dict) -> list[tuple[str, str]]:
    given = [(h["id"], h["name"]) for h in template.get("hospitals", [])]
    return [given[i] if i < len(given) else (f"hospital-{i + 1}", f"Hospital {i + 1}") for i in range(n)]


def create_consortium(directory: Path, hosts: list[HostSpec], *, template: dict | None = None) -> Genesis:
    """Write ``DIR/consortium/``, ``DIR/genesis.json`` and one home per hospital.

    Returns:
        The genesis every node now holds in ``HOME/keys/genesis.json``.
    """
    template = template if template is not None else load_template()
    ca = PrivateKey.generate()
    write_secret(directory / "consortium" / "consortium.key", ca)
    node_keys: dict[str, tuple[PrivateKey, PrivateKey]] = {}
    certs = []
    for h in hosts:
        sign, enc = PrivateKey.generate(), PrivateKey.generate()
        node_keys[h.node_id] = (sign, enc)
        certs.append(
            NodeCert(
                node_id=h.node_id,
                name=h.name,
                sign_key=sign.public_key.data,
                enc_key=enc.public_key.data,
                host=h.host,
                peer_port=h.peer_port,
                api_url=f"http://{h.host}:{h.api_port}",
            ).signed_by(ca)
        )
    known = {f.name for f in fields(ChainParams)}
    params = ChainParams(**{k: v for k, v in template.get("params", {}).items() if k in known})
    genesis = Genesis(
        chain_id=new_chain_id(),
        created_at_ms=time.time_ns() // 1_000_000,
        consortium_key=ca.public_key.data,
        nodes=tuple(certs),
        params=params,
        data_type_levels=dict(template["data_type_levels"]),
        role_levels=dict(template["role_levels"]),
        contracts=contract_sources(list(template.get("contracts", []))),
        engine=engine_fingerprint(),
    )
    genesis.check()
    text = genesis.to_json()
    (directory / "genesis.json").write_text(text)
    for h in hosts:
        home = directory / h.node_id
        sign, enc = node_keys[h.node_id]
        write_secret(home / "keys" / "node.key", sign)
        write_secret(home / "keys" / "enc.key", enc)
        (home / "keys" / "genesis.json").write_text(text)
        cfg = NodeConfig(
            node_id=h.node_id,
            home=home,
            api=ApiConfig(host=h.listen_host, port=h.api_port),
            peer=PeerConfig(host=h.listen_host, port=h.peer_port),
        )
        (home / "node.toml").write_text(cfg.to_toml())
    return genesis
