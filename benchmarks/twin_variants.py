"""Where the served lane's time goes, and three session/graph variants measured against it.

Runs the graph zesty serves for all-MiniLM-L6-v2 on its one-thread twin (a compute lane, as
served under load; SkipLayerNormalization fusion off, zesty/runtime/onnx_runner.py):

- an ONNX Runtime profile at one batch shape: the share of each operator type, and of each
  node kind (layer index dropped) for the largest ones;
- in alternating rounds over the same mixed batches (3-9 sequences of 8-64 tokens), the
  paired time ratio against the served session of: denormals-as-zero
  (`session.set_denormal_as_zero`), no memory pattern (`enable_mem_pattern=False`), and the
  graph with BiasGelu (erf) replaced by FastGelu (tanh approximation), with the lowest
  cosine of its mean-pooled, normalized outputs against the served graph's.

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/twin_variants.py \\
        --out benchmarks/results/twin_variants.json
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from compute_lanes import _artifact  # noqa: E402
from serve_embed import machine, versions  # noqa: E402


def _session(model_file: Path, profile: str | None = None, **config):
    import onnxruntime as ort

    from zesty.runtime.onnx_runner import CPU_DISABLED, session_options

    opts = session_options(1)
    for key, value in config.items():
        if key == "mem_pattern":
            opts.enable_mem_pattern = value
        else:
            opts.add_session_config_entry(key, value)
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(
        str(model_file), opts, ["CPUExecutionProvider"], disabled_optimizers=list(CPU_DISABLED)
    )


def _feed(n: int, length: int, rng: np.random.Generator, names: list[str]) -> dict:
    ids = rng.integers(1000, 20000, (n, length)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": ids * 0}
    return {k: v for k, v in feed.items() if k in names}


def _profile(model_file: Path, names: list[str], shape: tuple[int, int], runs: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="zesty-prof-")
    session = _session(model_file, profile=f"{tmp}/p")
    feed = _feed(*shape, np.random.default_rng(0), names)
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op, by_node, total = collections.Counter(), collections.Counter(), 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total += e["dur"]
            by_op[e["args"]["op_name"]] += e["dur"]
            node = re.sub(r"layer\.\d+", "layer.N", e["name"][: -len("_kernel_time")])
            node = re.sub(r"_\d+(_quant)?$", "_N", node)  # Attention_3_quant -> Attention_N
            by_node[f"{e['args']['op_name']} {node}"] += e["dur"]
    share = lambda c: {k: round(v / total, 4) for k, v in c.most_common(12)}  # noqa: E731
    return {"batch_shape": list(shape), "by_op_type": share(by_op), "by_node_kind": share(by_node)}


def alternated_rounds(sessions: dict, batches: list[dict], rounds: int) -> dict[str, list[float]]:
    """Seconds per pass over `batches`, for each session, in `rounds` rounds whose order
    alternates (after a warm-up on the first five batches), so drift hits all alike."""
    for session in sessions.values():
        for b in batches[:5]:
            session.run(None, b)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        for name in list(sessions) if r % 2 == 0 else list(sessions)[::-1]:
            start = time.perf_counter()
            for b in batches:
                sessions[name].run(None, b)
            times[name].append(time.perf_counter() - start)
    return times


def _pooled(states: np.ndarray) -> np.ndarray:
    v = states.mean(axis=1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--out", default=str(HERE / "results" / "twin_variants.json"))
    args = ap.parse_args()

    import onnx

    artifact = _artifact(2)
    served = artifact.model_file
    graph = onnx.load(str(served))
    for node in graph.graph.node:
        if node.op_type == "BiasGelu":
            node.op_type = "FastGelu"  # same inputs (x, bias), com.microsoft domain
    fastgelu = Path(tempfile.mkdtemp(prefix="zesty-fastgelu-")) / "model.onnx"
    onnx.save(graph, str(fastgelu))

    sessions = {
        "served": _session(served),
        "denormal_as_zero": _session(served, **{"session.set_denormal_as_zero": "1"}),
        "no_mem_pattern": _session(served, mem_pattern=False),
        "fastgelu": _session(fastgelu),
    }
    names = [i.name for i in sessions["served"].get_inputs()]
    rng, pick = np.random.default_rng(0), random.Random(0)
    batches = [
        _feed(pick.randint(3, 9), pick.randint(8, 64), rng, names) for _ in range(args.batches)
    ]
    cosine = min(
        float(
            (
                _pooled(sessions["served"].run(None, b)[0])
                * _pooled(sessions["fastgelu"].run(None, b)[0])
            )
            .sum(1)
            .min()
        )
        for b in batches
    )
    times = alternated_rounds(sessions, batches, args.rounds)
    variants = {}
    for name, values in times.items():
        ratios = [v / s for v, s in zip(values, times["served"])]
        variants[name] = {
            "median_s": round(statistics.median(values), 4),
            "paired_ratio_median": round(statistics.median(ratios), 4),
            "paired_ratio_range": [round(min(ratios), 4), round(max(ratios), 4)],
        }
    variants["fastgelu"]["min_cosine_vs_served"] = round(cosine, 6)
    doc = {
        "benchmark": "twin_variants",
        "machine": machine(),
        "versions": versions(),
        "config": vars(args) | {"artifact": artifact.manifest["recipe"]["name"]},
        "profile": _profile(served, names, (6, 36), 200),
        "variants": variants,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"profile": doc["profile"]["by_op_type"], "variants": variants}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
