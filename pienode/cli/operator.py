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
from pienode.ledger.kinds import CID_RE


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


def _cmd_bench_load(args: argparse.Namespace) -> int:
    from pienode.bench.load import LoadOptions, human, run_load

    opts = LoadOptions(Path(args.dir), txs=args.txs, concurrency=args.concurrency, batch=args.batch,
                       rate=args.rate, tx_timeout_s=args.tx_timeout,
                       ids_out=Path(args.ids_out) if args.ids_out else None, progress=sys.stderr.isatty())
    result = asyncio.run(run_load(opts))
    emit(result, args.json, human)
    return 0 if result["committed"] == result["submitted"] else 1


async def _deploy(args: argparse.Namespace) -> dict[str, Any]:
    from pienode.crypto.keys import PrivateKey
    from pienode.identity.genesis import Genesis
    from pienode.ledger.contracts import ContractHost
    from pienode.ledger.tx import Transaction
    from pienode.runtime.node import now_ms

    home = Path(args.home)
    source = Path(args.file).read_text()
    ContractHost.validate(source, args.name)  # refused here: nothing is submitted
    key_path = Path(args.key) if args.key else home.resolve().parent / "consortium" / "consortium.key"
    try:
        key = PrivateKey.from_bytes(bytes.fromhex(key_path.read_text().strip()))
    except FileNotFoundError:
        raise PieError(f"no consortium key at {key_path} (pass --key)") from None
    genesis = Genesis.load(home / "keys" / "genesis.json")
    if key.public_key.data != genesis.consortium_key:
        raise PieError(f"{key_path} is not this consortium's key")
    url = args.node or cluster.api_url_of(home)
    async with NodeClient(url) as c:
        deployed = {x["name"]: x for x in (await c.get("/contracts"))["contracts"]}
        version = deployed.get(args.name, {}).get("version", 0) + 1
        tx = Transaction.create(key, chain_id=genesis.chain_id, kind="deploy_contract", sender="consortium",
                                timestamp_ms=now_ms(), body={"name": args.name, "source": source, "version": version})
        out = await c.submit(tx.encode())
    receipt = out.get("receipt") or {}
    if out.get("status") != "committed":
        raise PieError(f"deployment {out['tx_id']} not committed yet")
    if not receipt.get("ok"):
        raise PieError(f"deployment refused: {receipt.get('error')}")
    return {"name": args.name, "version": version, "height": out["height"], "tx_id": out["tx_id"]}


def _cmd_contract_deploy(args: argparse.Namespace) -> int:
    out = asyncio.run(_deploy(args))
    emit(out, args.json, lambda r: f"deployed {r['name']} version {r['version']} at height {r['height']}")
    return 0


def _cmd_contract_call(args: argparse.Namespace) -> int:
    import json

    try:
        call_args = json.loads(args.args) if args.args else {}
    except ValueError as exc:
        raise PieError(f"--args is not JSON: {exc}") from None
    if not isinstance(call_args, dict):
        raise PieError("--args must be a JSON object of keyword arguments")

    async def go() -> Any:
        async with NodeClient(args.node) as c:
            return await c.post_json(f"/contracts/{args.name}/call", {"fn": args.fn, "args": call_args})

    out = asyncio.run(go())
    emit(out, args.json, lambda r: json.dumps(r["value"], indent=2, sort_keys=True))
    return 0


def _cmd_files(args: argparse.Namespace) -> int:
    action = args.files_command
    method, path = {
        "ls": ("GET", "/files"), "gc": ("POST", "/files/gc"), "verify": ("POST", "/files/verify"),
        "stat": ("GET", "/files/{cid}/stat"), "pin": ("PUT", "/files/{cid}/pin"),
        "unpin": ("DELETE", "/files/{cid}/pin"),
    }[action]
    cid = getattr(args, "cid", "")
    if action in ("stat", "pin", "unpin") and not CID_RE.fullmatch(cid):
        # The CID becomes part of the URL path: refuse it here rather than send "../x".
        raise PieError(f"CID wants a base32 CIDv1, 'b' and 20 to 120 of a-z2-7, not {cid!r}")
    path = path.format(cid=cid)

    async def go() -> Any:
        async with NodeClient(args.node, timeout_s=3600) as c:
            return await c.request(method, path)

    out = asyncio.run(go())

    def human(r: Any) -> str:
        if action == "ls":
            return table([(f["cid"], f["size"], "pinned" if f.get("pinned") else "") for f in r["files"]],
                         ["cid", "bytes", ""]) if r["files"] else "no files"
        return "\n".join(f"{k:<18} {v}" for k, v in r.items())

    emit(out, args.json, human)
    return 0 if out.get("ok", True) else 1


def _sizes(text: str) -> tuple[int, ...]:
    from pienode.bench.paper import PAPER_SIZES

    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are whole numbers of bytes, comma-separated") from None
    unknown = [n for n in sizes if n not in PAPER_SIZES]
    if not sizes or unknown:
        raise argparse.ArgumentTypeError(f"sizes must be among the paper's: {', '.join(map(str, PAPER_SIZES))}")
    return sizes


def _cmd_bench_paper(args: argparse.Namespace) -> int:
    from pienode.bench.paper import PaperOptions, human, main_paper

    opts = PaperOptions(max_bytes=args.max_bytes, runs=args.runs, large_runs=args.large_runs,
                        rekey_runs=args.rekey_runs, sizes=args.sizes)
    out = main_paper(Path(args.dir), opts)
    emit(out, args.json, human)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pienode.demo import run_demo

    return run_demo(Path(args.dir) if args.dir else None, args.keep)


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

    bn = sub.add_parser("bench", help="benchmarks against a running local cluster")
    bsub = bn.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    bl = bsub.add_parser("load", help="push signed transactions through the cluster, count commits")
    bl.add_argument("--dir", required=True, help="the cluster's directory (cluster.json)")
    bl.add_argument("--txs", type=int, default=1000)
    bl.add_argument("--concurrency", type=int, default=64)
    bl.add_argument("--batch", type=int, default=1, help="transactions per POST (the API takes up to 1000)")
    bl.add_argument("--rate", type=float, default=0.0, help="cap in tx/s (0: as fast as possible)")
    bl.add_argument("--tx-timeout", type=float, default=120.0, help="seconds before one tx counts as failed")
    bl.add_argument("--ids-out", default=None, help="write the committed transaction ids to this file")
    bl.add_argument("--json", action="store_true")
    bl.set_defaults(func=_cmd_bench_load)
    bp = bsub.add_parser("paper", help="the design paper's simulation: upload/download by size, re-key rounds")
    bp.add_argument("--dir", required=True, help="the cluster's directory (cluster.json)")
    bp.add_argument("--max-bytes", type=int, default=1_000_000_000, help="skip sizes above this (paper: up to 1 GB)")
    bp.add_argument("--runs", type=int, default=5, help="runs per size up to 10 MB")
    bp.add_argument("--large-runs", type=int, default=2, help="runs per size above 10 MB")
    bp.add_argument("--rekey-runs", type=int, default=1000, help="re-key rounds (the paper ran 4,000; 0: none)")
    bp.add_argument("--sizes", type=_sizes, default=None, metavar="N,N,...",
                    help="only these of the paper's sizes, in bytes (e.g. 1000000 for the 1 MB download goal)")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(func=_cmd_bench_paper)

    ct = sub.add_parser("contract", help="deploy (consortium-signed) or call contracts")
    ctsub = ct.add_subparsers(dest="contract_command", required=True, metavar="ACTION")
    cdp = ctsub.add_parser("deploy", help="validate, sign with the consortium key, submit, wait for the commit")
    cdp.add_argument("--home", required=True, help="a node home of the consortium (genesis, API address)")
    cdp.add_argument("--name", required=True)
    cdp.add_argument("--file", required=True)
    cdp.add_argument("--key", default=None, help="consortium key (default: HOME/../consortium/consortium.key)")
    cdp.add_argument("--node", default=None, help="node API URL (default: the home's own)")
    cdp.add_argument("--json", action="store_true")
    cdp.set_defaults(func=_cmd_contract_deploy)
    ccl = ctsub.add_parser("call", help="a read-only call answered by one node")
    ccl.add_argument("--node", required=True)
    ccl.add_argument("--name", required=True)
    ccl.add_argument("--fn", required=True)
    ccl.add_argument("--args", default=None, help="JSON object of keyword arguments")
    ccl.add_argument("--json", action="store_true")
    ccl.set_defaults(func=_cmd_contract_call)

    fl = sub.add_parser("files", help="the node's file store: ls, stat, pin, unpin, gc, verify")
    flsub = fl.add_subparsers(dest="files_command", required=True, metavar="ACTION")
    for name, helptext, takes_cid in (
        ("ls", "files held by the node", False), ("stat", "one file's size, blocks and pin", True),
        ("pin", "keep a file even when no record points to it", True), ("unpin", "undo pin", True),
        ("gc", "collect content no record references and nobody pins", False),
        ("verify", "re-hash every stored block", False),
    ):
        fp = flsub.add_parser(name, help=helptext)
        fp.add_argument("--node", required=True, help="node API URL (its own host: housekeeping is local)")
        if takes_cid:
            fp.add_argument("cid")
        fp.add_argument("--json", action="store_true")
        fp.set_defaults(func=_cmd_files)

    dm = sub.add_parser("demo", help="a 4-hospital cluster and the whole EMR-sharing story, narrated")
    dm.add_argument("--dir", default=None, help="where the cluster lives (default: a temporary directory)")
    dm.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    dm.set_defaults(func=_cmd_demo)

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
