"""A user's wallet: a directory with the user's secret keys and certificate.

``W/wallet.json`` (mode 0600) holds the signing secret, the encryption secret (the user's
Umbral key), the user id and the certificate the registering hospital signed. Secrets never
leave the wallet: the node only ever sees public keys and signatures.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pienode.crypto.keys import PrivateKey
from pienode.errors import PieError

WALLET_FILE = "wallet.json"


@dataclass
class Wallet:
    path: Path
    sign_key: PrivateKey
    enc_key: PrivateKey
    user_id: str = ""
    role: str = ""
    name: str = ""
    cert: dict[str, Any] | None = None
    node: str = ""

    @classmethod
    def create(cls, path: Path) -> "Wallet":
        if (path / WALLET_FILE).exists():
            raise PieError(f"{path} already holds a wallet")
        return cls(path, PrivateKey.generate(), PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> "Wallet":
        try:
            d = json.loads((path / WALLET_FILE).read_text())
            return cls(
                path,
                PrivateKey.from_bytes(bytes.fromhex(d["sign_secret"])),
                PrivateKey.from_bytes(bytes.fromhex(d["enc_secret"])),
                d.get("user_id", ""),
                d.get("role", ""),
                d.get("name", ""),
                d.get("cert"),
                d.get("node", ""),
            )
        except FileNotFoundError:
            raise PieError(f"no wallet in {path} (create one with `pie register --wallet {path} ...`)") from None
        except (ValueError, KeyError) as exc:
            raise PieError(f"wallet {path} is damaged: {exc}") from None

    def require_registered(self) -> None:
        if not self.user_id:
            raise PieError(f"wallet {self.path} is not registered yet")

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {
            "user_id": self.user_id,
            "role": self.role,
            "name": self.name,
            "node": self.node,
            "sign_secret": self.sign_key.to_bytes().hex(),
            "enc_secret": self.enc_key.to_bytes().hex(),
            "cert": self.cert,
        }
        tmp = self.path / (WALLET_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / WALLET_FILE)
