"""``pie``: the command line of patients, physicians, researchers and insurers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pienode.cli.client import NodeClient
from pienode.cli.common import emit, run_command
from pienode.cli.wallet import Wallet
from pienode.identity.levels import ROLES


def default_node() -> str:
    env = os.environ.get("PIE_NODE")
    if env:
        return env
    for candidate in (Path("demo-cluster/cluster.json"), Path("cluster.json")):
        if candidate.exists():
            try:
                return json.loads(candidate.read_text())["nodes"][0]["api"]
            except (ValueError, KeyError, IndexError):
                pass
    return "http://127.0.0.1:8700"


async def _register(args: argparse.Namespace) -> int:
    wallet = Wallet.create(Path(args.wallet))
    async with NodeClient(args.node) as c:
        out = await c.post_json("/users/register", {
            "role": args.role,
            "name": args.name,
            "sign_key": wallet.sign_key.public_key.hex(),
            "enc_key": wallet.enc_key.public_key.hex(),
        })
    wallet.user_id, wallet.role, wallet.name = out["user_id"], args.role, args.name
    wallet.cert, wallet.node = out["cert"], args.node
    wallet.save()
    result = {"user_id": out["user_id"], "role": args.role, "security_level": out["cert"]["security_level"],
              "hospital_id": out["cert"]["hospital_id"], "wallet": str(wallet.path), "height": out["height"]}
    emit(result, args.json, lambda r: f"registered {r['user_id']} ({r['role']}, level {r['security_level']}) "
                                      f"at {r['hospital_id']}; wallet {r['wallet']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pie", description="PIE: share medical records with the patient in control.")
    p.add_argument("--node", default=None, help="hospital node API URL (default: $PIE_NODE or the local cluster)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("register", help="create a wallet and register it at a hospital")
    r.add_argument("--wallet", required=True)
    r.add_argument("--role", required=True, choices=ROLES)
    r.add_argument("--name", required=True, help="your real name: kept only by the registering hospital")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_register)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.node is None:
        args.node = default_node()
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
