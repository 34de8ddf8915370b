"""Fixtures for the multi-host tests (issue 8): a 4-hospital consortium, one node per network
namespace, each host with its own address on a shared L2 segment.

Owns: the ``netns_cluster`` (kernel bridge + veth, links that can be cut) and
``impaired_cluster`` (every link delayed 50 +/- 10 ms with 5 % loss: ``tc netem`` where the
kernel has it, tests/netns/wire.py where it does not) fixtures, and the HTTP client the
tests use (it talks only to the lab's own 10.77.x.0/24 addresses, never through a proxy).
Never: leaves a namespace, link or node process behind, even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pienode.crypto.keys import PrivateKey
from tests.netns.lab import Lab, LabUnavailable, check_available, netem_available, wait_exit

REPO = Path(__file__).resolve().parents[2]
API_PORT = 8700
#: Impairment of the third test, as ``tc netem`` arguments.
NETEM = ("delay", "50ms", "10ms", "loss", "5%")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             diagnose: Callable[[], str] | None = None) -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            out = cond()
            if out:
                return out
        except (OSError, ValueError, KeyError) as exc:  # a node down or cut off answers nothing
            last = exc
        time.sleep(interval)
    extra = f" (last error: {last!r})" if last else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}"
                         + (("\n" + diagnose()) if diagnose else ""))


@dataclass
class NetnsCluster:
    lab: Lab
    directory: Path
    ids: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    #: How the links are impaired, for the test's report ("" when they are not).
    impairment: str = ""

    # -- lifecycle ---------------------------------------------------------------------

    def create(self) -> None:
        nodes = []
        for i in range(self.lab.n):
            self.ids.append(f"hospital-{i + 1}")
            nodes += ["--node", f"hospital-{i + 1}={self.lab.addr(i)}"]
        r = subprocess.run([sys.executable, "-m", "pienode.cli.operator", "genesis", "create",
                            "--dir", str(self.directory), *nodes, "--api-port", str(API_PORT), "--json"],
                           capture_output=True, text=True, timeout=120, env=self._env(), stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"genesis create failed: {r.stderr}"
        self.procs = [None] * self.lab.n

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def home(self, i: int) -> Path:
        return self.directory / self.ids[i]

    def log(self, i: int) -> Path:
        return self.directory / f"{self.ids[i]}.log"

    def start(self, i: int) -> None:
        with open(self.log(i), "ab") as log:
            self.procs[i] = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.ns(i), sys.executable, "-m", "pienode.cli.operator",
                 "start", "--home", str(self.home(i))],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=self._env())

    def start_all(self, timeout: float = 90) -> None:
        for i in range(self.lab.n):
            self.start(i)

        def healthy() -> bool:
            for i, p in enumerate(self.procs):
                assert p is not None and p.poll() is None, \
                    f"{self.ids[i]} exited ({p and p.returncode}):\n{self.tail(i)}"
            return all(self.get(i, "/health", timeout=2).get("ok") for i in range(self.lab.n))

        wait_for(healthy, timeout, "every node's /health", diagnose=self.tails)

    def stop_all(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is not None and not wait_exit(p, 15):
                p.kill()
                p.wait()

    def tail(self, i: int, lines: int = 25) -> str:
        try:
            text = self.log(i).read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def tails(self) -> str:
        return "\n".join(f"--- {self.ids[i]} log tail ---\n{self.tail(i)}" for i in range(self.lab.n))

    # -- HTTP --------------------------------------------------------------------------

    def url(self, i: int, path: str) -> str:
        return f"http://{self.lab.addr(i)}:{API_PORT}{path}"

    def get(self, i: int, path: str, timeout: float = 5) -> Any:
        with _OPENER.open(self.url(i, path), timeout=timeout) as r:
            return json.loads(r.read())

    def status(self, i: int) -> dict[str, Any]:
        return self.get(i, "/status")

    def status_from_inside(self, i: int) -> dict[str, Any]:
        """Host ``i``'s /status asked from within its own namespace (works while its link is cut)."""
        code = ("import json,sys,urllib.request as u;"
                "o=u.build_opener(u.ProxyHandler({}));"
                f"sys.stdout.write(o.open({self.url(i, '/status')!r},timeout=5).read().decode())")
        r = self.lab.in_ns(i, [sys.executable, "-c", code])
        assert r.returncode == 0, f"status of {self.ids[i]} from inside its namespace: {r.stderr}"
        return json.loads(r.stdout)

    def register_from_inside(self, i: int, name: str) -> subprocess.Popen[str]:
        """Start registering a patient through host ``i`` from within its namespace (reachable
        while the root namespace cannot reach it); ``finish_register`` collects the answer."""
        body = json.dumps({"role": "patient", "name": name, "sign_key": PrivateKey.generate().public_key.hex(),
                           "enc_key": PrivateKey.generate().public_key.hex()})
        code = ("import sys,urllib.request as u,urllib.error as e\n"
                "o=u.build_opener(u.ProxyHandler({}))\n"
                f"r=u.Request({self.url(i, '/users/register')!r},data={body!r}.encode(),method='POST',"
                "headers={'Content-Type':'application/json'})\n"
                "try:\n    sys.stdout.write(o.open(r,timeout=60).read().decode())\n"
                "except e.HTTPError as x:\n    sys.stdout.write(x.read().decode())\n")
        return subprocess.Popen(["ip", "netns", "exec", self.lab.ns(i), sys.executable, "-c", code],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    @staticmethod
    def finish_register(proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
        """The node's answer: the registration (committed), or its error with the ``tx_id``."""
        out, err = proc.communicate(timeout=timeout)
        assert out.strip(), f"in-namespace registration printed nothing: {err[-1000:]}"
        return dict(json.loads(out))

    def wait_tx_committed(self, i: int, tx_id: str, timeout: float) -> int:
        """Poll host ``i`` until transaction ``tx_id`` is committed; returns its height."""
        def committed() -> int | None:
            doc = self.get(i, f"/txs/{tx_id}")
            return int(doc["height"]) if doc["status"] == "committed" else None

        return int(wait_for(committed, timeout, f"tx {tx_id[:12]} committed on {self.ids[i]}",
                            diagnose=self.tails))

    def connect_ms(self, i: int, j: int, tries: int = 7) -> float:
        """Median time host ``i`` takes to open a TCP connection to host ``j``'s API (one
        round trip between the two hosts, as their links delay it)."""
        code = ("import socket,statistics,sys,time\n"
                "ts=[]\n"
                f"for _ in range({tries}):\n"
                "    t=time.monotonic()\n"
                f"    socket.create_connection(({self.lab.addr(j)!r},{API_PORT}),timeout=10).close()\n"
                "    ts.append((time.monotonic()-t)*1000)\n"
                "sys.stdout.write(str(statistics.median(ts)))")
        r = self.lab.in_ns(i, [sys.executable, "-c", code], timeout=120)
        assert r.returncode == 0, f"connect {self.ids[i]} -> {self.ids[j]}: {r.stderr}"
        return float(r.stdout)

    def register(self, i: int, name: str, timeout: float = 45) -> dict[str, Any]:
        """Register a patient through hospital ``i``; returns once the registration committed."""
        body = json.dumps({"role": "patient", "name": name,
                           "sign_key": PrivateKey.generate().public_key.hex(),
                           "enc_key": PrivateKey.generate().public_key.hex()}).encode()
        req = urllib.request.Request(self.url(i, "/users/register"), data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(req, timeout=timeout) as r:
                assert r.status == 201, r.status
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"register at {self.ids[i]}: {exc.code} {exc.read()[:500]!r}\n"
                                 + self.tails()) from None

    def block_hash(self, i: int, height: int) -> str | None:
        try:
            return self.get(i, f"/blocks/{height}")["hash"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def wait_same_block(self, idx: list[int], height: int, timeout: float, what: str) -> str:
        """Wait until every host in ``idx`` has block ``height``, and check it is the same block."""
        def have() -> dict[int, str | None] | None:
            hashes = {i: self.block_hash(i, height) for i in idx}
            return hashes if all(hashes.values()) else None

        hashes = wait_for(have, timeout, f"{what}: block {height} on {[self.ids[i] for i in idx]}",
                          diagnose=self.tails)
        assert len(set(hashes.values())) == 1, f"{what}: hosts disagree on block {height}: {hashes}"
        return str(next(iter(hashes.values())))

    def wait_converged(self, idx: list[int], timeout: float, what: str) -> tuple[int, str]:
        """Wait until the hosts in ``idx`` report the same head (height and last block hash)."""
        def same() -> tuple[int, str] | None:
            heads = {(s["height"], s["last_block_hash"]) for s in (self.status(i) for i in idx)}
            return next(iter(heads)) if len(heads) == 1 else None

        return wait_for(same, timeout, f"{what}: same head on {[self.ids[i] for i in idx]}", diagnose=self.tails)

    def wait_connected(self, timeout: float) -> None:
        want = self.lab.n - 1
        wait_for(lambda: all(self.status(i)["peers_connected"] == want for i in range(self.lab.n)),
                 timeout, f"every node connected to its {want} peers", diagnose=self.tails)


def _running(lab: Lab, directory: Path) -> Generator[NetnsCluster, None, None]:
    try:
        check_available()
    except LabUnavailable as exc:
        pytest.skip(f"issue 8: the multi-host tests need network namespaces: {exc}")
    cluster = NetnsCluster(lab, directory)
    try:
        lab.create()
        cluster.create()
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()
        lab.destroy()


@pytest.fixture
def netns_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    """Four hospitals on a kernel bridge; ``cluster.lab.cut(i)`` / ``heal(i)`` pull and
    replug host ``i``'s cable."""
    yield from _running(Lab(mode="bridge"), tmp_path / "consortium")


@pytest.fixture
def impaired_cluster(tmp_path: Path) -> Iterator[NetnsCluster]:
    """Four hospitals whose every link delays 50 +/- 10 ms and loses 5 % of the frames."""
    if os.geteuid() == 0 and netem_available():
        lab = Lab(mode="bridge")
        gen = _running(lab, tmp_path / "consortium")
        cluster = next(gen)
        try:
            lab.netem(*NETEM)
            cluster.impairment = "tc netem " + " ".join(NETEM)
            yield cluster
        finally:
            gen.close()
        return
    # This kernel has no sch_netem: the same impairment in userspace (tests/netns/wire.py).
    seed = int.from_bytes(os.urandom(4), "big")
    lab = Lab(mode="wire", wire_args=("--delay-ms", "50", "--jitter-ms", "10", "--loss", "0.05",
                                      "--seed", str(seed)))
    for cluster in _running(lab, tmp_path / "consortium"):
        cluster.impairment = f"wire.py {' '.join(lab.wire_args)} (no sch_netem in this kernel)"
        yield cluster
