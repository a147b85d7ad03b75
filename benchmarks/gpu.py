"""GPU benchmark in one call: ONNX Runtime's CUDA execution provider (fp16) vs torch eager.

    python benchmarks/gpu.py [--out benchmarks/results/gpu.json] [--dry-run]

On a CUDA machine, for the encoder workloads of `zesty bench` (all-MiniLM-L6-v2 embeddings,
a BERT-base-shaped classifier), it compiles each model with `zesty optimize --target cuda
--precision fp16`, then times the artifact on ONNX Runtime's CUDA execution provider against
the same model in eager PyTorch on the GPU (fp32 and fp16), at batch 1 and 32, on the
benchmark's texts; then runs `zesty bench generate --against baseline,naive` (the servers
use the GPU where they can) and keeps its results. One JSON file holds it all.

Without a GPU (or with --dry-run) it runs the same plumbing on tiny models on the CPU
(CPU execution provider, fp32, a few iterations), so the script is known to work before a
GPU machine is paid for; the JSON then says `"dry_run": true` and its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def has_cuda() -> bool:
    try:
        import onnxruntime as ort
        import torch

        return torch.cuda.is_available() and (
            "CUDAExecutionProvider" in ort.get_available_providers()
        )
    except ImportError:
        return False


def _timeit(fn, sync, seconds: float, min_iters: int = 3) -> float:
    fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    sync()
    return (time.perf_counter() - t0) / n


def encoder(workload: str, dry: bool, tmp: Path, seconds: float) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers as tf

    from zesty.bench import models
    from zesty.bench.workloads import WORKLOADS, Corpus

    w = WORKLOADS[workload]
    model_dir = models.get(w.model, tiny=dry)
    art = tmp / f"{workload}-artifact"
    target, precision = ("cpu", "fp32") if dry else ("cuda", "fp16")
    cmd = [sys.executable, "-m", "zesty.cli", "optimize", str(model_dir), "--out", str(art)]
    cmd += ["--target", target, "--precision", precision, "--quiet"]
    cmd += ["--measure-seconds", "0.1" if dry else "0.8"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    compile_s = time.perf_counter() - t0
    manifest = json.loads((art / "manifest.json").read_text())
    texts = Corpus(model_dir, w.tokens, seed=7).take(64)
    tok = tf.AutoTokenizer.from_pretrained(model_dir)
    device = "cpu" if dry else "cuda"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    auto = (
        tf.AutoModelForSequenceClassification if w.task == "text-classification" else tf.AutoModel
    )
    providers = ["CPUExecutionProvider"] if dry else ["CUDAExecutionProvider"]
    session = ort.InferenceSession(str(art / "model.onnx"), providers=providers)
    names = {i.name for i in session.get_inputs()}
    out: dict = {
        "model": str(model_dir),
        "artifact_recipe": manifest["recipe"]["name"],
        "compile_s": round(compile_s, 1),
        "ort_providers": session.get_providers(),
        "batches": {},
    }
    dtypes = [torch.float32] if dry else [torch.float32, torch.float16]
    torch_models = {
        str(dt).split(".")[-1]: auto.from_pretrained(model_dir, dtype=dt).to(device).eval()
        for dt in dtypes
    }
    for batch in (1, 32):
        enc = tok(texts[:batch], padding=True, return_tensors="np")
        feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
        row: dict = {"tokens": int(enc["input_ids"].shape[1])}
        row["ort_ms"] = round(_timeit(lambda f=feeds: session.run(None, f), sync, seconds) * 1e3, 3)
        tensors = {k: torch.from_numpy(v).to(device) for k, v in enc.items()}
        for name, m in torch_models.items():
            with torch.inference_mode():
                sec = _timeit(lambda m=m, t=tensors: m(**t), sync, seconds)
            row[f"torch_{name}_ms"] = round(sec * 1e3, 3)
            row[f"ort_vs_torch_{name}_x"] = round(sec * 1e3 / row["ort_ms"], 2)
        out["batches"][str(batch)] = row
        print(f"{workload} batch {batch}: {row}", file=sys.stderr, flush=True)
    return out


def generation(dry: bool, tmp: Path) -> dict:
    out_dir = tmp / "bench-generate"
    cmd = [sys.executable, "-m", "zesty.cli", "bench", "generate", "--out", str(out_dir)]
    cmd += ["--against", "baseline,naive"]
    cmd += ["--quick", "--clients", "1", "--duration", "1"] if dry else ["--clients", "1,16,64"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"command": " ".join(cmd[2:]), "error": done.stderr[-2000:]}
    result = json.loads((out_dir / "results.json").read_text())
    return {"command": " ".join(cmd[2:]), "workloads": result["workloads"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    ap.add_argument("--dry-run", action="store_true", help="tiny models on the CPU")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per measurement")
    args = ap.parse_args()
    dry = args.dry_run or not has_cuda()
    if dry:
        print("benchmarks/gpu.py: no CUDA here: dry run on tiny CPU models", file=sys.stderr)
    from zesty.bench.machine import machine, versions

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tmp = Path(tempfile.mkdtemp(prefix="zesty-gpu-"))
    result: dict = {
        "benchmark": "gpu",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dry_run": dry,
        "machine": machine(),
        "versions": versions(),
        "encoders": {},
    }
    seconds = 0.2 if dry else args.seconds
    for workload in ("embed", "classify"):
        try:
            result["encoders"][workload] = encoder(workload, dry, tmp, seconds)
        except (subprocess.CalledProcessError, RuntimeError, OSError, ValueError) as exc:
            result["encoders"][workload] = {"error": str(exc)[-2000:]}
    result["generation"] = generation(dry, tmp)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}" + (" (dry run)" if dry else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
