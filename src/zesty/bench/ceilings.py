"""This machine's ceilings: peak fp32 GEMM FLOP/s and memory bandwidth, and rooflines.

Peak GEMM: a square fp32 matmul (torch, all physical cores), best of a few repeats.
Bandwidth: a copy of an array far larger than the caches (numpy), counted as bytes read
plus bytes written, best of a few repeats. Both are what software on this box actually
reaches, not the datasheet.

A result's roofline is the throughput the slower of the two ceilings allows for its model:
an encoder forward pass costs ~2 FLOPs per weight per token (compute bound); one decode step
of a language model costs 2 FLOPs per weight per sequence and reads every weight once
(memory bound at small batches). Attention's own FLOPs are left out, so the fractions are a
slight overestimate of the headroom.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


def gemm_flops(n: int = 1024, seconds: float = 1.0, threads: int | None = None) -> float:
    import torch

    from zesty.settings import physical_cores

    old = torch.get_num_threads()
    torch.set_num_threads(threads or physical_cores())
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t))
        return best
    finally:
        torch.set_num_threads(old)


def memory_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    import numpy as np

    src = np.ones(mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best


def measure(quick: bool = False) -> dict:
    flops = gemm_flops(512 if quick else 1024, 0.3 if quick else 1.5)
    bw = memory_bandwidth(64 if quick else 512, 3 if quick else 5)
    return {
        "gemm_fp32_gflops": round(flops / 1e9, 1),
        "memory_bandwidth_gbs": round(bw / 1e9, 2),
        "method": "torch.mm fp32 square (best of repeats); numpy copy, read+write bytes",
    }


def matmul_weights(model_dir: Path) -> dict:
    """Weights that take part in a matmul per token, from safetensors headers (no loading).

    Embedding tables are lookups, not matmuls, and are left out; a language model's output
    projection is counted (tied or not).
    """
    config = json.loads((model_dir / "config.json").read_text())
    total = matmul = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for d in meta["shape"]:
                count *= d
            total += count
            embedding = "embed" in name or name.endswith(("wte.weight", "wpe.weight"))
            if len(meta["shape"]) == 2 and not embedding and "lm_head" not in name:
                matmul += count
    if "ForCausalLM" in "".join(config.get("architectures") or []) or "LMHead" in "".join(
        config.get("architectures") or []
    ):
        hidden = config.get("hidden_size") or config.get("n_embd")
        matmul += hidden * config["vocab_size"]
    return {"parameters": total, "matmul_parameters": matmul}


def encoder_roofline_rps(ceil: dict, weights: dict, mean_tokens: float) -> float:
    """Requests/s a compute-bound encoder could reach at peak fp32 GEMM speed."""
    return ceil["gemm_fp32_gflops"] * 1e9 / (2 * weights["matmul_parameters"] * mean_tokens)


def decode_roofline_tps(ceil: dict, weights: dict, sequences: int) -> float:
    """Decode tokens/s with `sequences` sharing each step: min(compute, fp32 weight reads)."""
    compute = ceil["gemm_fp32_gflops"] * 1e9 / (2 * weights["matmul_parameters"])
    memory = sequences * ceil["memory_bandwidth_gbs"] * 1e9 / (4 * weights["parameters"])
    return min(compute, memory)
