"""Per-node configuration: ``HOME/node.toml``, layered defaults < file < environment < flags.

Every setting is a field below with its default and its meaning (this module is the one
place that documents them). Unknown keys are refused with the key's name, in the file and
in the environment (``PIE_<SECTION>_<KEY>``, e.g. ``PIE_API_PORT=8080``).
Genesis (the consortium's shared document) is kept apart, in ``HOME/keys/genesis.json``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from pienode.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ApiConfig:
    #: Address the HTTP API listens on.
    host: str = "127.0.0.1"
    #: Port of the HTTP API (0: any free port).
    port: int = 8700
    #: Largest request body accepted by POST /txs, in bytes.
    max_tx_body_bytes: int = 2 * 1024 * 1024
    #: Longest a POST /txs?wait=1 waits for the commit, in milliseconds.
    max_wait_ms: int = 30_000
    #: Treat requests from loopback as the operator's (file transfers without a user
    #: signature, file store housekeeping). Turn off when a reverse proxy on this host
    #: forwards outside requests over loopback.
    trust_loopback: bool = True


@dataclass(frozen=True, slots=True)
class PeerConfig:
    #: Address the peer (consensus, sync, file exchange) port listens on.
    host: str = "127.0.0.1"
    #: Peer port; the consortium's genesis tells the other hospitals where to dial.
    port: int = 8701
    #: Largest peer frame, in bytes (must exceed the 1 MB block plus overhead).
    max_frame_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FilesConfig:
    #: Largest upload accepted by POST /files, in bytes.
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024
    #: Acknowledge an upload only once this many hospitals hold it (0: the genesis default).
    replication: int = 0


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    #: Roles this hospital registers through POST /users/register.
    allowed_roles: tuple[str, ...] = ("patient", "physician", "researcher", "insurer")


@dataclass(frozen=True, slots=True)
class LogConfig:
    #: Python logging level name.
    level: str = "INFO"
    #: One JSON object per line (with the node id) instead of text.
    json: bool = False


@dataclass(frozen=True, slots=True)
class NodeConfig:
    #: This hospital's node id as genesis names it (e.g. "hospital-1").
    node_id: str = ""
    #: The node's home directory (set from --home; not read from the file).
    home: Path = Path(".")
    api: ApiConfig = field(default_factory=ApiConfig)
    peer: PeerConfig = field(default_factory=PeerConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def genesis_path(self) -> Path:
        return self.keys_dir / "genesis.json"

    def to_toml(self) -> str:
        d = asdict(self)
        del d["home"]
        d["registration"]["allowed_roles"] = list(d["registration"]["allowed_roles"])
        return tomli_w.dumps(d)


_SECTIONS = {"api": ApiConfig, "peer": PeerConfig, "files": FilesConfig, "registration": RegistrationConfig,
             "log": LogConfig}


def _coerce(section: str, key: str, tname: str, value: Any, *, from_text: bool) -> Any:
    """Check (or, for environment text, parse) one value against its field's type name."""
    try:
        if tname == "int":
            v = int(value) if from_text else value
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        elif tname == "bool":
            text = str(value).lower()
            if not from_text and isinstance(value, bool):
                return value
            if from_text and text in _TRUE | _FALSE:
                return text in _TRUE
        elif tname == "str":
            if isinstance(value, str):
                return value
        elif tname.startswith("tuple"):
            items = value.split(",") if from_text else value
            if isinstance(items, (list, tuple)) and all(isinstance(i, str) for i in items):
                return tuple(i.strip() for i in items if i.strip())
    except ValueError:
        pass
    raise ConfigError(f"config {section}.{key}: {value!r} is not a valid {tname}")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _apply(cfg: NodeConfig, data: Mapping[str, Any], *, source: str, from_text: bool = False) -> NodeConfig:
    top: dict[str, Any] = {}
    for key, value in data.items():
        if key == "node_id":
            if not isinstance(value, str):
                raise ConfigError(f"{source}: node_id must be a string")
            top["node_id"] = value
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"{source}: unknown config key {key!r}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: [{key}] must be a table")
        section_cls = _SECTIONS[key]
        known = {f.name: f for f in fields(section_cls)}
        updates = {}
        for k, v in value.items():
            if k not in known:
                raise ConfigError(f"{source}: unknown config key {key}.{k!r}")
            updates[k] = _coerce(key, k, known[k].type, v, from_text=from_text)
        top[key] = replace(getattr(cfg, key), **updates)
    return replace(cfg, **top)


def load_config(home: Path, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> NodeConfig:
    """Defaults < ``HOME/node.toml`` < ``PIE_<SECTION>_<KEY>`` environment < ``overrides``.

    Raises:
        ConfigError: for an unreadable file, an unknown key, or a value of the wrong type.
    """
    cfg = NodeConfig(home=home)
    path = home / "node.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no node.toml in {home}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg = _apply(cfg, data, source=str(path))
    env = os.environ if env is None else env
    env_data: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("PIE_") or name in ("PIE_NODE", "PIE_HOME"):
            continue
        rest = name[4:].lower()
        section, _, key = rest.partition("_")
        if section not in _SECTIONS or not key:
            raise ConfigError(f"environment: unknown config variable {name}")
        env_data.setdefault(section, {})[key] = value
    cfg = _apply(cfg, env_data, source="environment", from_text=True)
    if overrides:
        cfg = _apply(cfg, overrides, source="flags")
    if not cfg.node_id:
        raise ConfigError(f"{path}: node_id is required")
    return cfg
