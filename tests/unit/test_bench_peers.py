"""The OpenVINO GenAI generation peer: a failure to install or convert is an error, not a crash."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from zesty.bench import peers, workloads


def _fake_venv(root: Path, cli_body: str) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    cli = venv / "bin" / "optimum-cli"
    cli.write_text("#!/bin/sh\n" + cli_body)
    cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
    return venv


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "gpt2-124m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    return d


def test_openvino_peers_take_part_in_generate_only() -> None:
    gen = workloads.expand(["generate-gpt2"])[0]
    embed = workloads.expand(["embed"])[0]
    names = [n for n, p in peers.PEERS.items() if gen.name in p.workloads]
    assert {"openvino-genai", "openvino-genai-f32", "openvino-genai-int8"} <= set(names)
    assert not [n for n in names if embed.name in peers.PEERS[n].workloads]


def test_install_failure_is_reported(monkeypatch, model_dir: Path) -> None:
    def fail(peer, log=None):
        raise RuntimeError("`pip install openvino-genai` failed: ERROR: no matching distribution")

    monkeypatch.setattr(peers, "ensure_venv", fail)
    t = peers.target("openvino-genai", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert t.error and "no matching distribution" in t.error
    assert t.cmd == []


def test_convert_failure_is_reported(monkeypatch, tmp_path: Path, model_dir: Path) -> None:
    venv = _fake_venv(tmp_path, 'echo "ValueError: unsupported model type"; exit 1\n')
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    t = peers.target("openvino-genai-int8", workloads.expand(["generate-gpt2"])[0], model_dir)
    assert t.error and "ValueError: unsupported model type" in t.error


def test_convert_is_cached_and_command_built(monkeypatch, tmp_path: Path, model_dir: Path):
    calls = tmp_path / "calls"
    # the fake exporter writes the IR into its last argument and counts its runs
    body = f'echo run >> {calls}; for a; do out="$a"; done; mkdir -p "$out"; '
    body += 'touch "$out/openvino_model.xml"\n'
    venv = _fake_venv(tmp_path, body)
    monkeypatch.setattr(peers, "ensure_venv", lambda peer, log=None: venv)
    monkeypatch.setattr(peers, "peers_dir", lambda: tmp_path / "peers")
    w = workloads.expand(["generate-gpt2"])[0]
    t1 = peers.target("openvino-genai-f32", w, model_dir)
    t2 = peers.target("openvino-genai", w, model_dir)
    assert t1.error is None and t2.error is None
    assert calls.read_text().count("run") == 1  # both fp32 peers share one cached IR
    assert t1.dialect == "tgi" and t1.path == "/generate_stream"
    assert t1.cmd[0] == str(venv / "bin" / "python")
    assert t1.cmd[1].endswith("benchmarks/peers/openvino_genai_server.py")
    assert t1.cmd[-2:] == ["--precision", "f32"] and "{port}" in t1.cmd
