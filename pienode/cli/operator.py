"""``pienode``: the operator's command line (see ../shared/INTERFACE.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from pienode.cli import cluster
from pienode.cli.client import NodeClient
from pienode.cli.common import emit, run_command, table
from pienode.errors import PieError


def _cmd_start(args: argparse.Namespace) -> int:
    from pienode.runtime.main import run_node

    return asyncio.run(run_node(Path(args.home)))


def _cmd_cluster_up(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    nodes = cluster.up(directory, args.nodes, args.base_port)
    if args.detach:
        emit({"nodes": nodes}, args.json, lambda r: table(
            [(n["id"], n["api"], n["pid"], n["home"]) for n in r["nodes"]], ["node", "api", "pid", "home"]))
        return 0
    sys.stderr.write(f"cluster of {len(nodes)} node(s) up in {directory}; Ctrl-C stops it\n")
    emit({"nodes": nodes}, args.json, lambda r: table(
        [(n["id"], n["api"], n["pid"]) for n in r["nodes"]], ["node", "api", "pid"]))
    try:
        while any(cluster.pid_alive(n["pid"]) for n in nodes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    cluster.down(directory)
    return 0


def _status_rows(rows: list[dict[str, Any]]) -> str:
    return table(
        [
            (r["id"], "up" if r.get("healthy") else "DOWN", r.get("height", "-"),
             (r.get("last_block_hash") or "-")[:16], r.get("view", "-"), r.get("primary", "-"),
             r.get("peers_connected", "-"), r.get("mempool", "-"), r["api"])
            for r in rows
        ],
        ["node", "state", "height", "last block", "view", "primary", "peers", "mempool", "api"],
    )


def _cmd_cluster_status(args: argparse.Namespace) -> int:
    rows = asyncio.run(cluster.status(Path(args.dir)))
    emit({"nodes": rows}, args.json, lambda r: _status_rows(r["nodes"]))
    return 0


def _cmd_cluster_down(args: argparse.Namespace) -> int:
    stopped = cluster.down(Path(args.dir))
    emit({"stopped": stopped}, args.json, lambda r: f"stopped {len(r['stopped'])} node(s)")
    return 0


async def _get(url: str, path: str) -> Any:
    async with NodeClient(url) as c:
        return await c.get(path)


def _cmd_status(args: argparse.Namespace) -> int:
    st = asyncio.run(_get(args.node, "/status"))
    emit(st, args.json)
    return 0


def _cmd_block(args: argparse.Namespace) -> int:
    blk = asyncio.run(_get(args.node, f"/blocks/{args.height}"))

    def human(b: dict[str, Any]) -> str:
        h = b["header"]
        lines = [f"block {h['height']}  {b['hash']}", f"  prev      {h['prev_hash']}",
                 f"  time      {h['timestamp_ms']}  proposer {h['proposer']}  view {h['view']}",
                 f"  state     {h['state_root']}", f"  txs       {h['tx_count']}"]
        for t, r in zip(b["txs"], b["receipts"]):
            lines.append(f"    {t.get('tx_id', '?')[:16]}  {t.get('kind', 'malformed'):<16} "
                         f"{t.get('sender', ''):<24} {'ok' if r['ok'] else r['code'] + ': ' + r['error']}")
        return "\n".join(lines)

    emit(blk, args.json, human)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from pienode.ledger.verify import verify_home

    report = verify_home(Path(args.home))

    def human(r: dict[str, Any]) -> str:
        head = f"{'OK' if r['ok'] else 'FAILED'}: height {r['height']}, {r['checked_blocks']} blocks, " \
               f"{r['checked_state_keys']} state keys checked"
        return "\n".join([head] + [f"  - {e}" for e in r["errors"]])

    emit(report, args.json, human)
    return 0 if report["ok"] else 1


def _cmd_genesis_create(args: argparse.Namespace) -> int:
    from pienode.identity.consortium import HostSpec, create_consortium, hospital_names, load_template

    directory = Path(args.dir)
    if (directory / "genesis.json").exists():
        raise PieError(f"{directory} already holds a consortium")
    template = load_template()
    names = dict(hospital_names(len(args.node), template))
    hosts = []
    for spec in args.node:
        node_id, sep, host = spec.partition("=")
        if not sep or not node_id or not host:
            raise PieError(f"--node wants ID=HOST, not {spec!r}")
        hosts.append(HostSpec(node_id, names.get(node_id, node_id), host, args.api_port, args.peer_port,
                              listen_host=args.listen))
    if len({h.node_id for h in hosts}) != len(hosts):
        raise PieError("node ids must be distinct")
    directory.mkdir(parents=True, exist_ok=True)
    genesis = create_consortium(directory, hosts, template=template)
    out = {"chain_id": genesis.chain_id, "genesis": str(directory / "genesis.json"),
           "consortium_key": str(directory / "consortium" / "consortium.key"),
           "homes": {h.node_id: str(directory / h.node_id) for h in hosts}}
    emit(out, args.json, lambda r: "\n".join(
        [f"consortium {r['chain_id']} created in {directory}",
         f"keep {r['consortium_key']} offline; give each site only its own home:"]
        + [f"  {k}: {v}" for k, v in r["homes"].items()]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pienode", description="PIE node: operate a hospital consortium's nodes.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("start", help="run one node in the foreground")
    s.add_argument("--home", required=True, help="the node's home directory (node.toml, keys/, data/)")
    s.set_defaults(func=_cmd_start)

    c = sub.add_parser("cluster", help="a local cluster: one process per hospital")
    csub = c.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    cu = csub.add_parser("up", help="create (or restart) and start a local cluster")
    cu.add_argument("--dir", required=True)
    cu.add_argument("--nodes", type=int, default=4)
    cu.add_argument("--base-port", type=int, default=None, help="API port of node 1 (peer = API + 1, ...)")
    cu.add_argument("--detach", action="store_true", help="return once every node answers /health")
    cu.add_argument("--json", action="store_true")
    cu.set_defaults(func=_cmd_cluster_up)
    cs = csub.add_parser("status", help="every node's state")
    cs.add_argument("--dir", required=True)
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(func=_cmd_cluster_status)
    cd = csub.add_parser("down", help="stop every node of the cluster")
    cd.add_argument("--dir", required=True)
    cd.add_argument("--json", action="store_true")
    cd.set_defaults(func=_cmd_cluster_down)

    st = sub.add_parser("status", help="one node's status")
    st.add_argument("--node", required=True, help="node API URL")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_cmd_status)

    b = sub.add_parser("block", help="show a committed block")
    b.add_argument("--node", required=True)
    b.add_argument("height", type=int)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_cmd_block)

    g = sub.add_parser("genesis", help="create a consortium for real hosts")
    gsub = g.add_subparsers(dest="genesis_command", required=True, metavar="ACTION")
    gc = gsub.add_parser("create", help="keys, certificates, genesis and one home per hospital")
    gc.add_argument("--dir", required=True)
    gc.add_argument("--node", action="append", required=True, metavar="ID=HOST",
                    help="a hospital and the address the others reach it at (repeat)")
    gc.add_argument("--api-port", type=int, default=8700)
    gc.add_argument("--peer-port", type=int, default=8701)
    gc.add_argument("--listen", default="0.0.0.0", help="address each node binds (default 0.0.0.0)")
    gc.add_argument("--json", action="store_true")
    gc.set_defaults(func=_cmd_genesis_create)

    v = sub.add_parser("verify", help="offline integrity check of a node's ledger and file store")
    v.add_argument("--home", required=True)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
