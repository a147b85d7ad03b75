"""Peer servers, each in its own virtual environment under the zesty cache.

A peer is installed on first use with `python -m venv` + `pip install` from the package
index (whatever pip is configured to use on this machine), so it can never change the
packages zesty runs with. An install or start that fails is recorded with its error and the
run goes on without that peer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from zesty.bench.servers import Target


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    requirements: tuple[str, ...]
    workloads: tuple[str, ...]  # workload kinds/names it takes part in
    check: str  # python code that must import cleanly after install
    venv: str  # venv folder name (peers sharing one package share it)
    flags: tuple[str, ...] = ()


PEERS = {
    "infinity": Peer(
        "infinity",
        "Infinity (infinity-emb[all]), its default torch engine",
        ("infinity-emb[all]",),
        ("embed", "classify"),
        "import infinity_emb",
        "infinity",
    ),
    "infinity-onnx": Peer(
        "infinity-onnx",
        "Infinity, --engine optimum (ONNX Runtime)",
        ("infinity-emb[all]",),
        ("embed", "classify"),
        "import infinity_emb",
        "infinity",
        ("--engine", "optimum"),
    ),
}


def peers_dir() -> Path:
    from zesty.compile.artifacts import cache_root

    return cache_root() / "peers"


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(peer: Peer, log=None) -> Path:
    """The peer's venv (installed now if needed); RuntimeError with pip's last lines if not."""
    root = peers_dir() / peer.venv
    marker = root / ".installed"
    wanted = " ".join(peer.requirements)
    if marker.exists() and marker.read_text() == wanted:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    install_log = root.parent / f"{peer.venv}-install.log"
    if log:
        log(f"installing {peer.venv} into {root} (pip log: {install_log})")
    with open(install_log, "w") as out:
        steps = [
            [_base_python(), "-m", "venv", str(root)],
            [str(root / "bin" / "pip"), "install", *peer.requirements],
            [str(root / "bin" / "python"), "-c", peer.check],
        ]
        for cmd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = install_log.read_text(errors="replace").strip().splitlines()[-6:]
                raise RuntimeError(f"`{' '.join(cmd[-2:])}` failed: " + " | ".join(tail))
    marker.write_text(wanted)
    return root


def target(name: str, workload, model_dir: Path, log=None) -> Target:
    """The Target for peer `name` on `workload`; `.error` is set when it cannot run here."""
    peer = PEERS[name]
    t = Target(name=name, label=peer.label, role="peer", dialect="", path="")
    try:
        venv = ensure_venv(peer, log)
    except RuntimeError as exc:
        t.error = str(exc)[-1500:]
        return t
    t.versions = _versions(venv, "infinity-emb", "torch", "onnxruntime", "optimum")
    if name.startswith("infinity"):
        t.cmd = [
            str(venv / "bin" / "infinity_emb"),
            "v2",
            "--model-id",
            str(model_dir),
            "--served-model-name",
            "model",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            *peer.flags,
        ]
        t.dialect = "infinity"
        t.path = "/embeddings" if workload.name == "embed" else "/classify"
        t.ready_path = "/health"
        t.env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
        t.ready_timeout = 600
    return t


def _versions(venv: Path, *dists: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        f"for d in {list(dists)!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60
        )
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
