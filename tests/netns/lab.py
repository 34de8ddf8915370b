"""Network lab for the multi-host tests: one network namespace per hospital, a shared L2 segment.

Owns: creating and removing the namespaces, the bridge and the veth pairs (or, for impaired
links where the kernel has no ``sch_netem``, the userspace wire of ``wire.py``), cutting and
healing one host's link, ``tc netem`` on the links, and removing what a crashed earlier run
left behind (its namespaces, links and orphaned processes).
Never: touches an interface, namespace or process it did not create (every name carries this
run's suffix and every run records its owner), or sends traffic outside the 10.77.x.0/24
subnet it created.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Owner records of live labs; /run is a tmpfs, so a reboot (which also drops every
#: namespace) forgets them too.
STATE_DIR = Path("/run/pienode-netns")
#: Namespaces are ``pie-<suffix>-h<i>``; links ``pn<kind><suffix>[i]`` (<= 15 characters).
NS_RE = re.compile(r"^pie-([0-9a-f]{6})-h\d+$")
LINK_RE = re.compile(r"^pn(?:br|v|t)([0-9a-f]{6})")
WIRE = Path(__file__).with_name("wire.py")


class LabUnavailable(Exception):
    """The machine forbids what the lab needs (not root, or no network namespaces)."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def tc(ns: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = (["ip", "netns", "exec", ns] if ns else []) + ["tc", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (with the pid, an identity that survives reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(record: dict) -> bool:
    return _start_time(int(record.get("pid", 0))) == record.get("start")


def check_available() -> None:
    """Raise LabUnavailable if this machine cannot host the lab."""
    if os.geteuid() != 0:
        raise LabUnavailable("needs root for ip netns / veth / bridge")
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise LabUnavailable("needs iproute2 (ip, tc)")
    probe = f"pie-{secrets.token_hex(3)}-h0"
    r = ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        raise LabUnavailable(f"`ip netns add` fails here: {r.stderr.strip()}")
    ip("netns", "del", probe, check=False)


def _kill_recorded(record: dict | None, key: str, must_contain: str) -> None:
    """SIGKILL a helper process a dead run recorded, if it is still that process."""
    if not record or not record.get(key):
        return
    pid, start = int(record[key]["pid"]), record[key]["start"]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if _start_time(pid) == start and must_contain.encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


def _remove_run(sfx: str, record: dict | None) -> None:
    """Remove everything of run ``sfx``: processes in its namespaces, namespaces, links."""
    _kill_recorded(record, "wire", WIRE.name)
    for ns in _namespaces():
        m = NS_RE.match(ns)
        if m and m.group(1) == sfx:
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:  # only the nodes this suite started in that namespace
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", ns, check=False)
    for link in _links():
        m = LINK_RE.match(link)
        if m and m.group(1) == sfx:
            ip("link", "del", link, check=False)
    (STATE_DIR / f"{sfx}.json").unlink(missing_ok=True)


def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list", check=False).stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    out = ip("-o", "link", "show", check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _records() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in STATE_DIR.glob("*.json"):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            out[p.stem] = {}
    return out


def _clean_stale(records: dict[str, dict]) -> None:
    suffixes = {m.group(1) for ns in _namespaces() if (m := NS_RE.match(ns))}
    suffixes |= {m.group(1) for link in _links() if (m := LINK_RE.match(link))}
    suffixes |= set(records)
    for sfx in suffixes:
        rec = records.get(sfx)
        if rec and _alive(rec):
            continue  # a concurrent run (another pytest on this machine) owns it
        _remove_run(sfx, rec)


def _free_octet(records: dict[str, dict]) -> int:
    """The third octet of a 10.77.x.0/24 no live lab and no route of this host uses."""
    taken = {int(r["octet"]) for r in records.values() if "octet" in r and _alive(r)}
    routes = ip("-4", "route", "show", "table", "all", check=False).stdout
    for octet in range(256):
        if octet not in taken and f"10.77.{octet}." not in routes:
            return octet
    raise RuntimeError("no free 10.77.x.0/24 subnet for the lab")


@dataclass
class Lab:
    """``n`` hosts ``10.77.<octet>.1..n`` in namespaces; the root namespace is ``.254``."""

    n: int = 4
    #: "bridge": veth pairs on a kernel bridge; "wire": TAPs on wire.py (delay/loss in userspace).
    mode: str = "bridge"
    wire_args: tuple[str, ...] = ()
    sfx: str = field(default_factory=lambda: secrets.token_hex(3))
    octet: int = -1
    wire: subprocess.Popen[str] | None = None
    netem_on: list[str] = field(default_factory=list)
    #: What wire.py said on exit (frames delayed and dropped), for the test's report.
    wire_report: str = ""

    # -- names -------------------------------------------------------------------------

    def ns(self, i: int) -> str:
        return f"pie-{self.sfx}-h{i + 1}"

    def addr(self, i: int) -> str:
        return f"10.77.{self.octet}.{i + 1}"

    @property
    def gateway(self) -> str:
        return f"10.77.{self.octet}.254"

    @property
    def bridge(self) -> str:
        return f"pnbr{self.sfx}"

    def veth(self, i: int) -> str:
        """The root-namespace end of host ``i``'s link (a bridge port)."""
        return f"pnv{self.sfx}{i + 1}"

    def tap(self, i: int | None) -> str:
        return f"pnt{self.sfx}{'c' if i is None else i + 1}"

    # -- lifecycle ---------------------------------------------------------------------

    def create(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        with open(STATE_DIR / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = _records()
            _clean_stale(records)
            self.octet = _free_octet(_records())
            self._save()
            try:
                for i in range(self.n):
                    ip("netns", "add", self.ns(i))
                    ip("-n", self.ns(i), "link", "set", "lo", "up")
                if self.mode == "bridge":
                    self._create_bridge()
                else:
                    self._create_wire()
            except BaseException:
                self.destroy()
                raise

    def _save(self) -> None:
        rec: dict = {"pid": os.getpid(), "start": _start_time(os.getpid()), "octet": self.octet}
        if self.wire is not None:
            rec["wire"] = {"pid": self.wire.pid, "start": _start_time(self.wire.pid)}
        (STATE_DIR / f"{self.sfx}.json").write_text(json.dumps(rec))

    def _create_bridge(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(self.n):
            ip("link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0", "netns", self.ns(i))
            ip("link", "set", self.veth(i), "master", self.bridge)
            ip("link", "set", self.veth(i), "up")
            self._address_host(i, "eth0")

    def _create_wire(self) -> None:
        names = [self.tap(i) for i in range(self.n)]
        self.wire = subprocess.Popen(
            [sys.executable, str(WIRE), *self.wire_args, "--plain", self.tap(None), *names, self.tap(None)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self._save()
        line = self.wire.stdout.readline() if self.wire.stdout else ""
        if line.strip() != "ready":
            err = self.wire.stderr.read() if self.wire.poll() is not None and self.wire.stderr else ""
            raise RuntimeError(f"wire.py did not start: {line!r} {err}")
        for i in range(self.n):
            ip("link", "set", self.tap(i), "netns", self.ns(i))
            self._address_host(i, self.tap(i))
        ip("addr", "add", f"{self.gateway}/24", "dev", self.tap(None))
        ip("link", "set", self.tap(None), "up")

    def _address_host(self, i: int, dev: str) -> None:
        # No default route: the nodes can reach the lab's subnet and nothing else.
        ip("-n", self.ns(i), "addr", "add", f"{self.addr(i)}/24", "dev", dev)
        ip("-n", self.ns(i), "link", "set", dev, "up")

    def destroy(self) -> None:
        """Remove everything this lab made; safe to call twice and after a partial create."""
        if self.wire is not None and self.wire.returncode is None:
            self.wire.terminate()
            try:
                self.wire_report = self.wire.communicate(timeout=10)[1].strip()
            except subprocess.TimeoutExpired:
                self.wire.kill()
                self.wire.communicate()
        _remove_run(self.sfx, None)

    # -- faults ------------------------------------------------------------------------

    def cut(self, i: int) -> None:
        """Host ``i`` loses its link (as if its cable were pulled at the switch)."""
        if self.mode == "wire":
            self._tell_wire(f"cut {i}")
        else:
            ip("link", "set", self.veth(i), "down")

    def heal(self, i: int) -> None:
        if self.mode == "wire":
            self._tell_wire(f"heal {i}")
        else:
            ip("link", "set", self.veth(i), "up")

    def _tell_wire(self, command: str) -> None:
        assert self.wire is not None and self.wire.stdin and self.wire.stdout
        self.wire.stdin.write(command + "\n")
        self.wire.stdin.flush()
        answer = self.wire.stdout.readline().strip()
        assert answer == "ok", f"wire.py answered {answer!r} to {command!r}"

    def split(self, side: list[int]) -> None:
        """Hosts ``side`` move to a second switch: two halves that cannot reach each other
        (nor, for ``side``, the root namespace)."""
        assert self.mode == "bridge"
        other = f"{self.bridge}b"
        if other not in _links():
            ip("link", "add", other, "type", "bridge")
            ip("link", "set", other, "up")
        for i in side:
            ip("link", "set", self.veth(i), "master", other)

    def join(self) -> None:
        """Undo ``split``: every host back on the one switch."""
        assert self.mode == "bridge"
        for i in range(self.n):
            ip("link", "set", self.veth(i), "master", self.bridge)
        ip("link", "del", f"{self.bridge}b", check=False)

    def netem(self, *spec: str) -> None:
        """``tc qdisc add dev <veth> root netem <spec>`` on every host's link (switch side)."""
        assert self.mode == "bridge"
        for i in range(self.n):
            tc(None, "qdisc", "add", "dev", self.veth(i), "root", "netem", *spec)
            self.netem_on.append(self.veth(i))

    def in_ns(self, i: int, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside host ``i``'s namespace."""
        return subprocess.run(["ip", "netns", "exec", self.ns(i), *argv], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (probed on the loopback of a scratch namespace)."""
    probe = f"pie-{secrets.token_hex(3)}-h0"
    if ip("netns", "add", probe, check=False).returncode != 0:
        return False
    try:
        return tc(probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False).returncode == 0
    finally:
        ip("netns", "del", probe, check=False)


def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return proc.poll() is not None
