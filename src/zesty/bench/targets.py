"""Which servers a workload is measured on, side by side, and the ablation chain.

Encoders: baseline (FastAPI + transformers pipeline) → + fast tokenizer and caches (zesty,
torch, no batching) → + dynamic batching (zesty, torch) → + ONNX Runtime (zesty, fp32 graph)
→ + autotuned quantization (zesty as shipped).
Generation: naive (no KV cache) → + KV cache (the transformers pipeline baseline) →
+ zesty's engine, one sequence at a time → + continuous batching (zesty as shipped).
"""

from __future__ import annotations

import sys
from pathlib import Path

from zesty.bench import peers
from zesty.bench.servers import Target
from zesty.bench.workloads import Workload

AGAINST = ("baseline", "naive", "peers", "peers-all", "ablation")


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "benchmarks"


def _zesty(name: str, label: str, model_dir: Path, flags: list[str], w: Workload) -> Target:
    cmd = [sys.executable, "-m", "zesty.cli", "serve", f"model={model_dir}", "--port", "{port}"]
    cmd += ["--log-level", "warning", *flags]
    generate = w.kind == "generate"
    return Target(
        name=name,
        label=label,
        role="zesty",
        dialect="tgi" if generate else "hf",
        path="/generate_stream" if generate else "/",
        cmd=cmd,
        ready="zesty",
    )


def _script(name: str) -> Path | None:
    path = benchmarks_dir() / name
    return path if path.exists() else None


def baseline(w: Workload, model_dir: Path, cores: int) -> Target:
    t = Target("baseline", "", "baseline", "", "")
    if w.kind == "encode":
        script = _script("baseline_app.py")
        t.label = (
            f"FastAPI + transformers {w.task} pipeline, fp32 eager, {cores} workers x 1 thread"
        )
        t.dialect, t.path = "hf", "/"
        if script is None:
            t.error = "benchmarks/baseline_app.py not found (run from a source checkout)"
            return t
        t.cmd = [sys.executable, str(script), "--port", "{port}", "--workers", str(cores)]
        t.cmd += ["--threads", "1", "--model", str(model_dir), "--task", w.task]
        return t
    return _generate_app(t, "pipeline", w, model_dir, cores)


def naive(w: Workload, model_dir: Path, cores: int) -> Target:
    t = Target("naive", "", "naive", "", "")
    return _generate_app(t, "naive", w, model_dir, cores)


def _generate_app(t: Target, mode: str, w: Workload, model_dir: Path, cores: int) -> Target:
    script = _script("generate_apps.py")
    t.cancels_on_disconnect = False  # a pipeline call runs to its end
    t.dialect, t.path = "tgi", "/generate_stream"
    t.label = (
        "FastAPI + transformers text-generation pipeline (KV cache), fp32 eager"
        if mode == "pipeline"
        else "naive generation loop without KV cache (full forward pass per token)"
    )
    if script is None:
        t.error = "benchmarks/generate_apps.py is not in this checkout yet"
        return t
    # as its users run it: torch's default threads, one request at a time
    t.cmd = [sys.executable, str(script), str(model_dir), "--port", "{port}"]
    if mode == "naive":
        t.cmd.append("--no-cache")
    return t


def for_workload(
    w: Workload, model_dir: Path, against: set[str], cores: int, log=None
) -> list[Target]:
    """Targets in measurement order; ablation steps are numbered in `ablation_step`."""
    shipped = _zesty("zesty", "zesty as shipped (--backend auto, autotuned)", model_dir, [], w)
    out: list[Target] = []
    if "baseline" in against or "ablation" in against:
        out.append(baseline(w, model_dir, cores))
    if w.kind == "generate" and ("naive" in against or "ablation" in against):
        out.append(naive(w, model_dir, cores))
    out.append(shipped)
    for name, peer in peers.PEERS.items():  # defaults, every variant, or those named
        wanted = (
            "peers-all" in against
            or ("peers" in against and peer.default)
            or f"peer:{name}" in against
        )
        if wanted and w.name in peer.workloads:
            out.append(peers.target(name, w, model_dir, log))
    if "ablation" in against:
        if w.kind == "encode":
            chain = [
                ("baseline", None),
                ("abl-tokcache", ("+ fast tokenizer and caches", ["--backend", "torch"])),
                ("abl-batching", ("+ dynamic batching", ["--backend", "torch"])),
                ("abl-onnx", ("+ ONNX Runtime (fp32 graph)", ["--backend", "onnx"])),
                ("zesty", None),
            ]
            extra = {
                "abl-tokcache": ["--max-batch-size", "1"],
                "abl-onnx": ["--precision", "fp32"],
            }
        else:
            chain = [
                ("naive", None),
                ("baseline", None),
                (
                    "abl-engine",
                    ("+ zesty engine (compiled), one sequence at a time", ["--backend", "auto"]),
                ),
                ("zesty", None),
            ]
            extra = {"abl-engine": ["--max-batch-slots", "1"]}
        for step, (name, spec) in enumerate(chain):
            if spec is not None:
                label, flags = spec
                out.append(_zesty(name, label, model_dir, flags + extra.get(name, []), w))
            for t in out:
                if t.name == name:
                    t.ablation_step = step
    return out


def external(url: str, w: Workload) -> Target:
    """A server already running (`--url`): HF route for encoders, TGI stream for generation."""
    generate = w.kind == "generate"
    return Target(
        name="external",
        label=f"server at {url}",
        role="zesty",
        dialect="tgi" if generate else "hf",
        path="/generate_stream" if generate else "/",
        url=url,
    )
