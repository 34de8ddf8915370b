"""``pienode bench load``: signed transactions pushed through a running cluster.

Registers a physician and a patient through the API, pre-signs N distinct ``upload_record``
transactions (``txgen``), then C submitters push them, K per request, spread over the live
nodes. A transaction counts only once a node reports it committed (``POST /txs?wait=1`` or
``GET /txs/{id}?wait_ms``). Dead nodes are tolerated: a failed request is retried on another
live node, and a transaction whose node died before it was ordered is submitted again (the
same bytes: a transaction id commits at most once, so resending is always safe).

This module only measures; it never checks what is on chain beyond each transaction's own
commit (the cluster tests do that), and it never writes the physician's secret anywhere.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pienode.bench.lean_http import LeanHTTP
from pienode.bench.txgen import SignedTx, UploadSpec, sign_uploads
from pienode.crypto.keys import PrivateKey
from pienode.errors import PieError

#: How long a node that failed a request is skipped.
DEAD_BACKOFF_S = 1.0
#: Server-side wait per request for a commit (the API caps it at its own max).
WAIT_MS = 10_000
#: A transaction pending this long is also submitted to another node.
RESEND_S = 3.0


@dataclass
class LoadOptions:
    directory: Path
    txs: int = 1000
    concurrency: int = 64
    batch: int = 1
    rate: float = 0.0          # tx/s cap over the whole run; 0: as fast as possible
    tx_timeout_s: float = 120.0  # give up on one transaction after this long
    ids_out: Path | None = None  # write the ids of committed transactions, one hex per line
    progress: bool = False


@dataclass
class Tally:
    started: float = 0.0
    submitted: int = 0
    committed: int = 0
    failed: int = 0
    retries: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    committed_ids: list[str] = field(default_factory=list)
    last_commit: float = 0.0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class NodeSet:
    """The cluster's API URLs, skipping for a while the ones that just failed."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._dead_until = {u: 0.0 for u in urls}

    def pick(self, hint: int) -> str | None:
        now = time.monotonic()
        n = len(self.urls)
        for i in range(n):
            u = self.urls[(hint + i) % n]
            if self._dead_until[u] <= now:
                return u
        return None

    def failed(self, url: str) -> None:
        self._dead_until[url] = time.monotonic() + DEAD_BACKOFF_S


class RateLimiter:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        at = max(self._next, now)
        self._next = at + n / self.rate
        if at > now:
            await asyncio.sleep(at - now)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


class LoadRun:
    def __init__(self, opts: LoadOptions, urls: list[str]) -> None:
        self.opts = opts
        self.nodes = NodeSet(urls)
        self.tally = Tally()
        self.stopping = asyncio.Event()
        self.refused: dict[str, int] = {}
        self.http: LeanHTTP | None = None

    # -- HTTP ------------------------------------------------------------------------------

    async def _call(self, method: str, url: str, *, data: bytes = b"", json_doc: Any = None,
                    headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON) or raises ``ConnectionError`` for a node that did not answer."""
        assert self.http is not None
        if json_doc is not None:
            data, headers = json.dumps(json_doc).encode(), {"Content-Type": "application/json"}
        status, body = await self.http.request(method, url, data, headers)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {"error": body[:200].decode(errors="replace")}
        return status, doc

    async def _on_live_node(self, hint: int, method: str, path: str, **kw: Any) -> tuple[str, int, Any]:
        deadline = time.monotonic() + 30
        while True:
            url = self.nodes.pick(hint)
            if url is not None:
                try:
                    status, doc = await self._call(method, url + path, **kw)
                    return url, status, doc
                except ConnectionError as exc:
                    self.nodes.failed(url)
                    self.tally.error(f"unreachable ({exc})")
                    hint += 1
            if time.monotonic() > deadline:
                raise PieError(f"no live node answered {method} {path}")
            if url is None:
                await asyncio.sleep(0.2)

    # -- set-up ----------------------------------------------------------------------------

    async def register(self, role: str) -> tuple[PrivateKey, str]:
        key = PrivateKey.generate()
        doc = {"role": role, "name": f"bench {role}", "sign_key": key.public_key.hex(),
               "enc_key": PrivateKey.generate().public_key.hex()}
        _, status, out = await self._on_live_node(0, "POST", "/users/register", json_doc=doc)
        if status != 201:
            raise PieError(f"registering a {role} failed: {out.get('error', status)}")
        return key, out["user_id"]

    async def wait_known(self, user_ids: list[str], timeout_s: float = 30) -> None:
        """Every live node knows the users (a lagging node would refuse their transactions)."""
        deadline = time.monotonic() + timeout_s
        for url in self.nodes.urls:
            for uid in user_ids:
                while time.monotonic() < deadline:
                    try:
                        status, _ = await self._call("GET", f"{url}/users/{uid}")
                    except ConnectionError:
                        break  # a dead node: the submitters will avoid it
                    if status == 200:
                        break
                    await asyncio.sleep(0.05)

    # -- submitting ------------------------------------------------------------------------

    def _committed(self, tx: SignedTx, t0: float) -> None:
        now = time.monotonic()
        self.tally.committed += 1
        self.tally.latencies.append(now - t0)
        self.tally.committed_ids.append(tx.tx_id)
        self.tally.last_commit = now

    async def _post(self, txs: list[SignedTx], hint: int) -> tuple[set[str], dict[str, str]]:
        """One POST of ``txs``; returns (committed ids, {id: url} of those still to confirm)."""
        if len(txs) == 1:
            body = b'{"tx":"' + txs[0].b64.encode() + b'"}'
        else:
            body = b'{"txs":["' + b'","'.join(t.b64.encode() for t in txs) + b'"]}'
        done: set[str] = set()
        todo: dict[str, str] = {}
        try:
            url, status, doc = await self._on_live_node(
                hint, "POST", f"/txs?wait=1&timeout_ms={WAIT_MS}", data=body,
                headers={"Content-Type": "application/json"})
        except PieError:  # no node answered for a while: the caller keeps trying
            return done, todo
        results = doc.get("results") if len(txs) > 1 else [doc] if status in (200, 202) else []
        for r in results or []:
            if r.get("status") == "committed":
                done.add(r["tx_id"])
            else:
                todo[r["tx_id"]] = url
        if len(txs) == 1 and status not in (200, 202):
            self._refusal(txs[0], status, doc)
        for err in doc.get("errors", []) if len(txs) > 1 else []:
            self.tally.error(f"{err.get('kind', 'error')}: {err.get('error', '')}"[:120])
        if status == 503 or status >= 500:
            await asyncio.sleep(0.05)
        return done, todo

    async def _push(self, tx: SignedTx, hint: int) -> None:
        """Submit without waiting, to a live node other than ``hint - 1``; errors are moot."""
        url = self.nodes.pick(hint)
        if url is None:
            return
        self.tally.retries += 1
        try:
            await self._call("POST", f"{url}/txs", data=b'{"tx":"' + tx.b64.encode() + b'"}',
                             headers={"Content-Type": "application/json"})
        except ConnectionError:
            self.nodes.failed(url)

    def _refusal(self, tx: SignedTx, status: int, doc: Any) -> None:
        if status == 409:  # already pending or committed, i.e. our own retry
            return
        self.tally.error(f"HTTP {status}: {doc.get('error', '')}"[:120])
        if 400 <= status < 500:
            # A refusal may come from a node that lags (it does not know the physician yet):
            # try every node once before giving up on the transaction.
            self.refused[tx.tx_id] = self.refused.get(tx.tx_id, 0) + 1

    async def _confirm(self, tx: SignedTx, url: str | None, t0: float, hint: int) -> bool:
        """Follow one transaction until it commits, resubmitting it if its node lost it."""
        deadline = t0 + self.opts.tx_timeout_s
        not_found = 0
        last_push = t0
        while time.monotonic() < deadline and self.refused.get(tx.tx_id, 0) <= len(self.nodes.urls):
            target = url if url is not None else self.nodes.pick(hint)
            if target is None:
                await asyncio.sleep(0.2)
                continue
            try:
                status, doc = await self._call("GET", f"{target}/txs/{tx.tx_id}?wait_ms=5000")
            except ConnectionError:
                self.nodes.failed(target)
                url, hint = None, hint + 1
                continue
            if status == 200 and doc.get("status") == "committed":
                return True
            if status == 200 and time.monotonic() - last_push > RESEND_S:
                # Pending for long: like a PBFT client (Castro-Liskov §4.1), hand it to another
                # replica too, so that one unaware of it can time out on the primary.
                last_push = time.monotonic()
                hint += 1
                await self._push(tx, hint)
            if status == 404:
                # Not on this node: lost with a dead node, or this node lags. Send it again.
                not_found += 1
                self.tally.retries += 1
                done, todo = await self._post([tx], hint + not_found)
                if tx.tx_id in done:
                    return True
                url = todo.get(tx.tx_id)
                if url is None:
                    hint += 1
                    await asyncio.sleep(min(1.0, 0.05 * not_found))
            elif status >= 500 or status == 200:
                await asyncio.sleep(0.05)
        return False

    async def _deliver(self, txs: list[SignedTx], hint: int) -> None:
        t0 = time.monotonic()
        self.tally.submitted += len(txs)
        done, todo = await self._post(txs, hint)
        rest = []
        for tx in txs:
            if tx.tx_id in done:
                self._committed(tx, t0)
            else:
                rest.append((tx, todo.get(tx.tx_id)))

        async def follow(tx: SignedTx, url: str | None) -> None:
            if await self._confirm(tx, url, t0, hint + 1):
                self._committed(tx, t0)
            else:
                self.tally.failed += 1
                self.tally.error("refused by every node" if tx.tx_id in self.refused
                                 else "not committed within the deadline")

        if rest:
            await asyncio.gather(*(follow(tx, url) for tx, url in rest))

    async def submit_all(self, signed: list[SignedTx]) -> None:
        k = max(1, self.opts.batch)
        chunks = [signed[i:i + k] for i in range(0, len(signed), k)]
        it = iter(chunks)
        limiter = RateLimiter(self.opts.rate)

        async def worker(w: int) -> None:
            for chunk in it:
                if self.stopping.is_set():
                    return
                await limiter.take(len(chunk))
                if self.stopping.is_set():
                    return
                await self._deliver(chunk, w)

        self.tally.started = time.monotonic()
        tasks = [asyncio.create_task(worker(w)) for w in range(max(1, self.opts.concurrency))]
        reporter = asyncio.create_task(self._report()) if self.opts.progress else None
        try:
            await asyncio.gather(*tasks)
        finally:
            if reporter is not None:
                reporter.cancel()
                sys.stderr.write("\n")

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            t = self.tally
            el = time.monotonic() - t.started
            sys.stderr.write(f"\r  {t.committed}/{self.opts.txs} committed, {t.submitted} submitted, "
                             f"{t.committed / el if el else 0:.0f} tx/s, {sum(t.errors.values())} errors   ")
            sys.stderr.flush()

    def result(self) -> dict[str, Any]:
        t = self.tally
        end = t.last_commit or time.monotonic()
        duration = max(1e-9, end - t.started) if t.started else 0.0
        ms = [x * 1000 for x in t.latencies]
        return {
            "submitted": t.submitted,
            "committed": t.committed,
            "failed": t.failed,
            "tps": round(t.committed / duration, 1) if duration else 0.0,
            "duration_s": round(duration, 3),
            "latency_ms": {"p50": round(percentile(ms, 50), 1), "p90": round(percentile(ms, 90), 1),
                           "p99": round(percentile(ms, 99), 1), "max": round(max(ms, default=0.0), 1)},
            "errors": sum(t.errors.values()),
            "error_kinds": dict(sorted(t.errors.items(), key=lambda kv: -kv[1])[:10]),
            "retries": t.retries,
            "concurrency": self.opts.concurrency,
            "batch": self.opts.batch,
            "nodes": len(self.nodes.urls),
        }


def cluster_urls(directory: Path) -> list[str]:
    try:
        doc = json.loads((directory / "cluster.json").read_text())
        return [n["api"] for n in doc["nodes"]]
    except FileNotFoundError:
        raise PieError(f"no cluster in {directory} (run `pienode cluster up --dir {directory} --detach`)") from None
    except (ValueError, KeyError, TypeError):
        raise PieError(f"{directory}/cluster.json is damaged") from None


async def run_load(opts: LoadOptions) -> dict[str, Any]:
    """Run the whole benchmark; the result is what ``--json`` prints."""
    try:
        return await _run_load(opts)
    except asyncio.CancelledError:
        raise PieError("interrupted") from None


async def _run_load(opts: LoadOptions) -> dict[str, Any]:
    urls = cluster_urls(opts.directory)
    run = LoadRun(opts, urls)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        """First signal: stop submitting, finish what is in flight. Second: stop now."""
        if run.stopping.is_set() and main is not None:
            main.cancel()
        run.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):
            pass
    run.http = LeanHTTP(timeout_s=WAIT_MS / 1000 + 20, connect_timeout_s=3)
    try:
        _, st, status = await run._on_live_node(0, "GET", "/status")
        if st != 200:
            raise PieError("the cluster does not answer /status")
        phy_key, phy_id = await run.register("physician")
        _, pat_id = await run.register("patient")
        await run.wait_known([phy_id, pat_id])
        spec = UploadSpec(phy_key.to_bytes().hex(), phy_id, pat_id, status["chain_id"],
                          time.time_ns() // 1_000_000, secrets.token_hex(4))
        t_sign = time.monotonic()
        signed = await asyncio.to_thread(sign_uploads, spec, opts.txs)
        sign_s = time.monotonic() - t_sign
        await run.submit_all(signed)
    finally:
        await run.http.close()
    out = run.result()
    out["signing_s"] = round(sign_s, 3)
    out["stopped_early"] = run.stopping.is_set()
    if opts.ids_out is not None:
        opts.ids_out.write_text("".join(i + "\n" for i in run.tally.committed_ids))
    return out


def human(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    lines = [
        f"committed {r['committed']}/{r['submitted']} transactions in {r['duration_s']:.1f} s: "
        f"{r['tps']:.0f} tx/s",
        f"latency p50 {lat['p50']:.0f} ms, p90 {lat['p90']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms",
        f"concurrency {r['concurrency']}, {r['batch']} tx per request, {r['nodes']} nodes; "
        f"{r['errors']} errors, {r['retries']} resubmissions, {r['failed']} not committed",
    ]
    lines += [f"  {n} x {k}" for k, n in r["error_kinds"].items()]
    return "\n".join(lines)
