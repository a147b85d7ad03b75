"""How to spend the cores on encoder batches under load: one wide session or one lane per core.

Runs the compiled graph zesty serves for all-MiniLM-L6-v2 (compiled or taken from the
artifact cache) on batches of 16 sentences of 8-64 tokens, closed loop, in one process, and
compares, in alternating rounds of the same run:

- `wide`: one session with one intra-op thread per core, spinning, with ORT's
  SkipLayerNormalization fusion (zesty's lone-batch mode until benchmarks/skip_layernorm.py
  showed the fusion costs on two threads too);
- `wide-calm`: the same with spinning off (zesty's under-load mode before lanes);
- `lanes-fused`: one caller thread per core, each on a one-thread session that fuses residual
  Add + LayerNormalization into SkipLayerNormalization (as the main session does);
- `lanes`: the same with that fusion disabled (zesty's one-thread twin, onnx_runner.py).

Each is measured alone and beside a competing process that keeps `--busy` of one core busy
in short bursts (standing in for the server's event loop). Writes one JSON file:

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/compute_lanes.py \
        --out benchmarks/results/compute_lanes.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import statistics
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _burn(share: float, stop: mp.Event) -> None:
    """Busy `share` of one core: 1 ms bursts with sleeps in between."""
    busy = 0.001
    idle = busy * (1 - share) / share
    while not stop.is_set():
        t = time.perf_counter()
        while time.perf_counter() - t < busy:
            pass
        time.sleep(idle)


def _artifact(cores: int):
    from zesty.compile.autotune import Options
    from zesty.compile.compiler import compile_model
    from zesty.models.reference import ModelSpec
    from zesty.serving.model import load_reference_model

    model = load_reference_model(ModelSpec.embedded_default())
    artifact, _ = compile_model(model, model.default_head, Options(threads=cores), quiet=True)
    return artifact


def _sessions(model_file: Path, variant: str, cores: int) -> list:
    import onnxruntime as ort

    from zesty.runtime.onnx_runner import CPU_DISABLED, session_options

    def make(threads: int, spin: bool = True, disabled=()):
        opts = session_options(threads)
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(
            str(model_file), opts, ["CPUExecutionProvider"], disabled_optimizers=list(disabled)
        )

    if variant == "wide":
        return [make(cores)]
    if variant == "wide-calm":
        return [make(cores, spin=False)]
    one = make(1, disabled=CPU_DISABLED if variant == "lanes" else ())
    return [one] * cores


def _feeds(names: list[str], batch: int, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(8, 64)
        ids = np.array(
            [[rng.randrange(1000, 20000) for _ in range(length)] for _ in range(batch)],
            dtype=np.int64,
        )
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feed["token_type_ids"] = np.zeros_like(ids)
        out.append({k: v for k, v in feed.items() if k in names})
    return out


def _rate(sessions: list, feeds: list[dict], batch: int, seconds: float) -> float:
    lock = threading.Lock()
    state = {"next": 0, "done": 0}
    stop = time.perf_counter() + seconds

    def work(session) -> None:
        while time.perf_counter() < stop:
            with lock:
                i = state["next"]
                state["next"] += 1
            session.run(None, feeds[i % len(feeds)])
            with lock:
                state["done"] += batch

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["done"] / (time.perf_counter() - t0)


def main() -> int:
    from zesty.settings import physical_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "compute_lanes.json"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0, help="per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=float, default=0.4, help="competing load, share of a core")
    args = ap.parse_args()
    cores = physical_cores()
    artifact = _artifact(cores)
    variants = ["wide", "wide-calm", "lanes-fused", "lanes"]
    sessions = {v: _sessions(artifact.model_file, v, cores) for v in variants}
    names = [i.name for i in sessions["wide"][0].get_inputs()]
    feeds = _feeds(names, args.batch, 64)
    for v in variants:  # warm every session
        _rate(sessions[v], feeds, args.batch, 1.0)
    rates: dict[str, dict[str, list[float]]] = {
        load: {v: [] for v in variants} for load in ("alone", "competing")
    }
    for r in range(args.rounds):
        for load in ("alone", "competing"):
            stop = mp.Event()
            burner = None
            if load == "competing":
                burner = mp.Process(target=_burn, args=(args.busy, stop), daemon=True)
                burner.start()
            for v in variants if r % 2 == 0 else reversed(variants):
                rate = _rate(sessions[v], feeds, args.batch, args.seconds)
                rates[load][v].append(round(rate, 1))
                print(f"round {r + 1} {load:9s} {v:12s} {rate:7.1f} seq/s", flush=True)
            if burner is not None:
                stop.set()
                burner.join()
    medians = {
        load: {v: statistics.median(x) for v, x in per.items()} for load, per in rates.items()
    }
    result = {
        "benchmark": "compute_lanes",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "physical_cores": cores},
        "versions": {"onnxruntime": __import__("onnxruntime").__version__},
        "config": {
            "artifact": artifact.manifest["recipe"]["name"],
            "batch": args.batch,
            "tokens": [8, 64],
            "seconds": args.seconds,
            "rounds": args.rounds,
            "competing_core_share": args.busy,
        },
        "seq_per_s": rates,
        "median_seq_per_s": medians,
        "ratios_vs_wide": {
            load: {v: round(m / per["wide"], 3) for v, m in per.items()}
            for load, per in medians.items()
        },
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios_vs_wide"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
