"""Whether ONNX Runtime's SkipLayerNormalization fusion pays on this CPU, per thread count.

Two measurements in one run, each alternating the variants:

- the kernel alone: one `SkipLayerNormalization` node against `Add`, `Add`,
  `LayerNormalization` on a (6, 36, 384) fp32 input (MiniLM's width), one thread;
- the whole graph zesty serves for all-MiniLM-L6-v2 (compiled or taken from the artifact
  cache), loaded with the fusion (the session's default) and without it
  (`disabled_optimizers=SkipLayerNormFusion`, the one-thread twin's setting), at 1 and 2
  threads and batch shapes from 1x16 to 32x128 tokens.

Writes one JSON file:

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/skip_layernorm.py \
        --out benchmarks/results/skip_layernorm.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHAPES = ((1, 16), (1, 128), (6, 36), (32, 36), (32, 128))


def _kernel_models(hidden: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.random(hidden, dtype=np.float32), name)
        for name in ("gamma", "beta", "bias")
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", hidden])
    skip = helper.make_tensor_value_info("skip", TensorProto.FLOAT, ["b", "s", hidden])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", hidden])
    fused = [
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "gamma", "beta", "bias"],
            ["y"],
            domain="com.microsoft",
            epsilon=1e-12,
        )
    ]
    plain = [
        helper.make_node("Add", ["x", "skip"], ["t"]),
        helper.make_node("Add", ["t", "bias"], ["u"]),
        helper.make_node("LayerNormalization", ["u", "gamma", "beta"], ["y"], epsilon=1e-12),
    ]
    out = {}
    for name, nodes in (("SkipLayerNormalization", fused), ("Add+Add+LayerNormalization", plain)):
        graph = helper.make_graph(nodes, name, [x, skip], [y], weights)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        out[name] = model.SerializeToString()
    return out


def _session(model, threads: int, disabled=(), level=None):
    import onnxruntime as ort

    from zesty.runtime.onnx_runner import session_options

    opts = session_options(threads)
    if level is not None:
        opts.graph_optimization_level = level
    return ort.InferenceSession(
        model, opts, ["CPUExecutionProvider"], disabled_optimizers=list(disabled)
    )


def _ms(session, feed: dict, seconds: float) -> float:
    for _ in range(3):
        session.run(None, feed)
    times = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> int:
    import onnxruntime as ort

    from zesty.runtime.onnx_runner import CPU_DISABLED
    from zesty.settings import physical_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "skip_layernorm.json"))
    ap.add_argument("--seconds", type=float, default=1.0, help="per variant per shape per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import compute_lanes  # the same served artifact as the lanes benchmark

    cores = physical_cores()
    artifact = compute_lanes._artifact(cores)

    rng = np.random.default_rng(1)
    x, skip = rng.standard_normal((2, 6, 36, 384), dtype=np.float32)
    kernels = {
        name: _session(m, 1, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        for name, m in _kernel_models(384).items()
    }
    kernel_us: dict[str, list[float]] = {name: [] for name in kernels}
    graph_ms: dict[str, dict[str, list[float]]] = {}
    threads = sorted({1, cores})
    sessions = {
        (t, fused): _session(str(artifact.model_file), t, () if fused else CPU_DISABLED)
        for t in threads
        for fused in (True, False)
    }
    names = [i.name for i in sessions[(1, True)].get_inputs()]
    for r in range(args.rounds):
        for name, s in kernels.items():
            kernel_us[name].append(_ms(s, {"x": x, "skip": skip}, args.seconds) * 1e3)
        for (t, fused), s in sessions.items():
            for b, length in SHAPES:
                ids = rng.integers(1000, 20000, (b, length), dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
                feed["token_type_ids"] = np.zeros_like(ids)
                feed = {k: v for k, v in feed.items() if k in names}
                key = f"threads{t} b{b}x{length}"
                ms = _ms(s, feed, args.seconds)
                graph_ms.setdefault(key, {"fused": [], "unfused": []})[
                    "fused" if fused else "unfused"
                ].append(round(ms, 3))
        print(f"round {r + 1} done", flush=True)
    med = lambda v: round(statistics.median(v), 3)  # noqa: E731
    result = {
        "benchmark": "skip_layernorm",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "physical_cores": cores},
        "versions": {"onnxruntime": ort.__version__},
        "config": {
            "artifact": artifact.manifest["recipe"]["name"],
            "kernel_shape": [6, 36, 384],
            "seconds": args.seconds,
            "rounds": args.rounds,
        },
        "kernel_us_median": {k: med(v) for k, v in kernel_us.items()},
        "graph_ms": graph_ms,
        "graph_speedup_without_fusion": {
            k: round(med(v["fused"]) / med(v["unfused"]), 3) for k, v in graph_ms.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("kernel_us_median",)}, indent=2))
    print(json.dumps(result["graph_speedup_without_fusion"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
