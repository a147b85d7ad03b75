"""`zesty bench --quick` end to end on tiny models: every target measured, every file written.

Numbers are not checked for speed (a shared 2-core machine), only that they were measured.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zesty.bench.cli import add_parser, config_from


def _parse(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_options_are_checked():
    cfg = config_from(_parse("embed", "generate", "--clients", "16,1", "--quick"), [])
    assert [w.name for w in cfg.workloads] == ["embed", "generate-gpt2", "generate-smollm2"]
    assert cfg.clients == [1, 16]
    full = config_from(_parse(), [])  # defaults: each workload's own client counts, 10 s
    assert full.clients is None and full.duration == 10.0
    by_name = {w.name: w.clients for w in full.workloads}
    assert by_name == {
        "embed": (1, 4, 16, 32),
        "classify": (1, 4, 16, 32),
        "generate-gpt2": (1, 4, 16),
        "generate-smollm2": (1, 4, 16),
    }
    assert full.rounds == 1 and config_from(_parse("--rounds", "3"), []).rounds == 3
    for bad in (
        ["nope"],
        ["--against", "vllm"],
        ["--clients", "0"],
        ["--clients", "a"],
        ["--rounds", "0"],
    ):
        with pytest.raises(ValueError):
            config_from(_parse(*bad), [])


def test_cli_errors_are_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "zesty.cli", "bench", "embedd", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "unknown workload 'embedd'" in done.stderr
    assert "Traceback" not in done.stderr


def test_quick_run_measures_every_target(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "zesty.cli", "bench", "embed", "generate-gpt2", "--quick"]
    cmd += ["--against", "baseline,naive", "--clients", "2", "--duration", "1"]
    cmd += ["--warmup", "0.2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert result["ceilings"]["gemm_fp32_gflops"] > 0
    assert result["ceilings"]["memory_bandwidth_gbs"] > 0
    assert result["machine"]["load_average_after"]
    expected = {"embed": {"baseline", "zesty"}, "generate-gpt2": {"baseline", "naive", "zesty"}}
    for name, targets in expected.items():
        wres = result["workloads"][name]
        assert set(wres["targets"]) == targets
        for tname, rec in wres["targets"].items():
            assert "error" not in rec, (name, tname, rec.get("error"), rec.get("log_tail"))
            for clients in ("2",):
                p = rec["points"][clients]
                assert p["requests_done"] > 0 and p["statuses"].get("200")
                assert p["latency_ms"]["p50"] > 0
                assert 0 < p["roofline"]["fraction"]
                if name.startswith("generate"):
                    assert p["tokens_per_s"] > 0 and p["ttft_ms"]["p50"] > 0
                    assert p["itl_ms"]["n"] > 0
                else:
                    assert p["throughput_rps"] > 0
        assert wres["targets"]["zesty"]["served"]["backend"]
        summary = wres["summary"]
        assert summary["vs_baseline_x"] > 0
        assert {g["goal"] for g in summary["goals"]} == set(wres["goals"])
    assert result["workloads"]["embed"]["targets"]["zesty"]["repeats_30pct"]["throughput_rps"] > 0
    assert result["workloads"]["generate-gpt2"]["summary"]["vs_naive_x"] > 0
    md = (out / "results.md").read_text()
    assert "### embed" in md and "### generate-gpt2" in md and "vs_baseline_x" in md
    for png in ("embed-throughput", "embed-latency", "generate-gpt2-throughput"):
        data = (out / f"{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"({png}.png)" in md
