"""Benchmark: zesty text generation vs the out-of-box and naive FastAPI apps, GPT-2 124M shape.

One run starts each target in turn on loopback (never two at once) and drives its TGI
`POST /generate_stream` with the streaming load generator (`loadgen_stream.py`, its own
process) at each client count (default 1, 4, 16, 32), writing one JSON file:

- targets: `out_of_box` (benchmarks/generate_apps.py: pipeline, fp32 eager, one request at a
  time), `naive` (the same with `--no-cache`: the context is recomputed every token) and each
  `--zesty NAME=FLAGS` (`zesty serve MODEL --backend torch`, ...);
- workload: prompts of 32-256 tokens of English prose (the license texts under
  /usr/share/common-licenses, else this repo's docs), distinct per request (never sent twice
  in a run), 128 new tokens, greedy; TGI has no `ignore_eos`, so the random-weight model (see
  generate_models.py) may end a stream early on `<|endoftext|>` — the tokens each stream got
  are counted and reported, never assumed;
- per client count: generated tokens/s over a fixed window, TTFT p50/p99, inter-token
  latency p50/p99, request latency, the client's and the server's CPU, CPU used by other work
  on this shared machine during the window;
- ratios zesty / out-of-box and zesty / naive at 16 clients (the issue's target: 12x over
  the out-of-box app), and batch-1 tokens/s against the memory-bandwidth bound (weight bytes
  read per token / a large torch copy's bandwidth, measured in the same run).

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/serve_generate.py \\
        --zesty "torch=--backend torch" --out benchmarks/results/serve_generate.json

`--quick` is a smoke run on a tiny model (numbers not valid); `--table RESULT.json` prints
the Markdown table docs/generation.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import Request, urlopen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from serve_embed import (  # noqa: E402 - benchmarks/ is not a package
    Server,
    free_port,
    machine,
    machine_busy_s,
    tree_cpu_s,
    versions,
)

LICENSES = Path("/usr/share/common-licenses")


# -- workload ---------------------------------------------------------------------------------


def corpus_words() -> list[str]:
    """English prose: the license texts shipped with Debian, else this repo's docs."""
    files = sorted(p for p in LICENSES.glob("*") if p.is_file()) if LICENSES.is_dir() else []
    if sum(p.stat().st_size for p in files) < 100_000:
        files = sorted((ROOT / "docs").glob("*.md"))
    words: list[str] = []
    for path in files:
        words += path.read_text(encoding="utf-8", errors="ignore").split()
    return words


def make_prompts(n: int, tokenizer, lo: int, hi: int, seed: int, seen: set[str]) -> list[str]:
    """`n` distinct spans of the corpus, each cut to a length drawn from lo..hi tokens."""
    words = corpus_words()
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        target = rng.randint(lo, hi)
        start = rng.randrange(0, len(words) - hi * 2)
        text = " ".join(words[start : start + hi * 2])
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        if len(enc["input_ids"]) < target:
            continue
        text = text[: enc["offset_mapping"][target - 1][1]]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def write_bodies(prompts: list[str], new_tokens: int, folder: Path, name: str) -> Path:
    path = folder / f"{name}.jsonl"
    with path.open("w") as f:
        for p in prompts:
            body = {"inputs": p, "parameters": {"max_new_tokens": new_tokens, "details": True}}
            f.write(json.dumps(body) + "\n")
    return path


# -- the memory-bandwidth bound -----------------------------------------------------------------


def copy_bandwidth(threads: int, mib: int = 512, repeats: int = 10) -> float:
    """Bytes/s of a large torch copy (read + write counted), best of `repeats`."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def weight_bytes(model_dir: Path) -> int:
    """Bytes of weights a decode step reads: every parameter once (tied embeddings once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for name in f.keys():
            t = f.get_slice(name)
            shape = t.get_shape()
            n = 1
            for d in shape:
                n *= d
            total += n * 4
    return total


# -- running a target ---------------------------------------------------------------------------


def load(url: str, bodies: Path, clients: int, server_pid: int, duration: float, grace: float):
    cpu0, busy0 = tree_cpu_s(server_pid), machine_busy_s()
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen_stream.py"),
            "--url",
            url,
            "--bodies",
            str(bodies),
            "-c",
            str(clients),
            "--duration",
            str(duration),
            "--grace",
            str(grace),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    server_cpu = tree_cpu_s(server_pid) - cpu0
    cores = os.cpu_count() or 1
    wall = result["wall_s"]
    foreign = machine_busy_s() - busy0 - server_cpu - result["client_cpu_s"]
    result["server_cpu_s"] = round(server_cpu, 3)
    result["client_cpu_share_of_machine"] = round(result["client_cpu_s"] / (wall * cores), 4)
    result["client_cpu_share_of_total_cpu"] = round(
        result["client_cpu_s"] / max(result["client_cpu_s"] + server_cpu, 1e-9), 4
    )
    result["foreign_cpu_share_of_machine"] = round(max(foreign, 0.0) / (wall * cores), 4)
    return result


def warm_up(url: str, prompt: str, new_tokens: int) -> None:
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": new_tokens}}).encode()
    req = Request(url + "/generate", data=body, headers={"content-type": "application/json"})
    with urlopen(req, timeout=600) as r:
        r.read()


def run_target(name, cmd, ready, bodies, levels, duration, grace, warm_prompt) -> dict:
    print(f"[{name}] starting: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    port = int(cmd[cmd.index("--port") + 1])
    server = Server(name, cmd, port, ready)
    try:
        out: dict = {"command": shlex.join(cmd), "clients": {}}
        warm_up(server.url, warm_prompt, 8)
        for clients in levels:
            url = server.url + "/generate_stream"
            r = load(url, bodies[clients], clients, server.proc.pid, duration, grace)
            out["clients"][str(clients)] = r
            print(f"[{name}] c={clients}: {json.dumps(r)}", file=sys.stderr, flush=True)
        return out
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "serve_generate.json"))
    ap.add_argument(
        "--models-dir",
        default=os.path.expanduser("~/.cache/zesty-bench/models"),
        help="where generate_models.py builds (and caches) the random-weight models",
    )
    ap.add_argument(
        "--zesty",
        action="append",
        metavar="NAME=FLAGS",
        help="a zesty configuration, e.g. 'onnx=--backend onnx' (repeatable; default "
        "'torch=--backend torch')",
    )
    ap.add_argument("--clients", default="1,4,16,32", help="client counts, comma-separated")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds per client count")
    ap.add_argument("--grace", type=float, default=20.0, help="seconds running streams may end")
    ap.add_argument(
        "--naive-clients",
        default="1,16",
        help="client counts for the naive app (it serves one request at a time, so its tokens/s "
        "does not depend on them; only its queueing does)",
    )
    ap.add_argument("--naive-duration", type=float, default=60.0)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--skip", default="", help="targets to skip: out_of_box,naive,zesty_NAME")
    ap.add_argument("--quick", action="store_true", help="a smoke run on a tiny model")
    ap.add_argument("--table", metavar="RESULT", help="print a result file as Markdown; no run")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    levels = [int(c) for c in args.clients.split(",")]
    naive_levels = [int(c) for c in args.naive_clients.split(",")]
    skip = set(filter(None, args.skip.split(",")))

    if args.quick:
        sys.path.insert(0, str(ROOT))
        from tests.fixtures.tiny_causal import build_tiny_causal

        tmp_model = Path(tempfile.mkdtemp(prefix="zesty-gen-quick-"))
        model_dir = build_tiny_causal(tmp_model / "gpt2", "gpt2")
        model_name = "tiny random GPT-2 (tests/fixtures/tiny_causal.py)"
        levels = naive_levels = [1, 4]
        args.duration = args.naive_duration = 4.0
        args.grace, args.new_tokens, lo, hi = 3.0, 16, 8, 48
    else:
        from generate_models import build

        model_dir = build(Path(args.models_dir), "gpt2-124m")
        model_name = "GPT-2 124M shape, random weights (benchmarks/generate_models.py)"
        lo, hi = 32, 256

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    seen: set[str] = set()
    tmp = Path(tempfile.mkdtemp(prefix="zesty-gen-bench-"))
    warm_prompt = make_prompts(1, tok, lo, hi, 99, seen)[0]
    # distinct prompts per (target, client count): enough for the window at any speed
    per_level = {c: max(64, c * 12) for c in set(levels + naive_levels)}
    bodies_by_target: dict[str, dict[int, Path]] = {}
    names = ["out_of_box", "naive"] + [
        f"zesty_{v.split('=', 1)[0]}" for v in (args.zesty or ["torch=--backend torch"])
    ]
    seed = 1000
    prompt_tokens: list[int] = []
    for name in names:
        bodies_by_target[name] = {}
        for c, n in sorted(per_level.items()):
            seed += 1
            prompts = make_prompts(n, tok, lo, hi, seed, seen)
            prompt_tokens += [len(tok(p)["input_ids"]) for p in prompts]
            bodies_by_target[name][c] = write_bodies(prompts, args.new_tokens, tmp, f"{name}-{c}")

    threads = int(os.environ.get("ZESTY_THREADS", "0")) or (os.cpu_count() or 1)
    bandwidth = copy_bandwidth(threads)
    wbytes = weight_bytes(model_dir)
    result: dict = {
        "benchmark": "serve_generate",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_name,
        "machine": machine(),
        "versions": versions(),
        "workload": {
            "route": "POST /generate_stream (TGI), greedy, details: true",
            "prompt_tokens_min_mean_max": [
                min(prompt_tokens),
                round(sum(prompt_tokens) / len(prompt_tokens), 1),
                max(prompt_tokens),
            ],
            "max_new_tokens": args.new_tokens,
            "clients": levels,
            "naive_clients": naive_levels,
            "window_s": args.duration,
            "naive_window_s": args.naive_duration,
            "grace_s": args.grace,
            "prompts_distinct": True,
            "quick": args.quick,
        },
        "bandwidth": {
            "copy_bytes_per_s": round(bandwidth),
            "copy_gib_per_s": round(bandwidth / 2**30, 2),
            "weight_bytes_per_token": wbytes,
            "bound_tokens_per_s_batch1": round(bandwidth / wbytes, 2),
            "threads": threads,
        },
        "targets": {},
    }
    print(f"bandwidth: {json.dumps(result['bandwidth'])}", file=sys.stderr, flush=True)
    app = [sys.executable, str(HERE / "generate_apps.py"), str(model_dir)]
    if "out_of_box" not in skip:
        port = free_port()
        result["targets"]["out_of_box"] = run_target(
            "out_of_box",
            [*app, "--port", str(port)],
            "/health",
            bodies_by_target["out_of_box"],
            levels,
            args.duration,
            args.grace,
            warm_prompt,
        )
    if "naive" not in skip:
        port = free_port()
        result["targets"]["naive"] = run_target(
            "naive",
            [*app, "--port", str(port), "--no-cache"],
            "/health",
            bodies_by_target["naive"],
            naive_levels,
            args.naive_duration,
            args.grace,
            warm_prompt,
        )
    for variant in args.zesty or ["torch=--backend torch"]:
        name, flags = variant.split("=", 1)
        if f"zesty_{name}" in skip:
            continue
        port = free_port()
        cmd = [sys.executable, "-m", "zesty.cli", "serve", "--port", str(port)]
        cmd += [*shlex.split(flags), str(model_dir)]
        result["targets"][f"zesty_{name}"] = run_target(
            f"zesty_{name}",
            cmd,
            "/ready",
            bodies_by_target[f"zesty_{name}"],
            levels,
            args.duration,
            args.grace,
            warm_prompt,
        )
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["ratios"] = ratios(result, 16 if 16 in levels else levels[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ratios"], indent=1))
    return 0


def ratios(result: dict, at: int) -> dict:
    """zesty / out-of-box and zesty / naive tokens/s at `at` clients; batch-1 vs the bound."""
    targets, key = result["targets"], str(at)

    def tps(name: str, clients: str) -> float | None:
        t = targets.get(name, {}).get("clients", {}).get(clients)
        return t["tokens_per_s"] if t else None

    out: dict = {"at_clients": at, "target_x_vs_out_of_box": 12.0}
    bound = result["bandwidth"]["bound_tokens_per_s_batch1"]
    for name in targets:
        one = tps(name, "1")
        if one is not None:
            out[f"{name}_batch1_share_of_bandwidth_bound"] = round(one / bound, 3)
        if not name.startswith("zesty"):
            continue
        z = tps(name, key)
        for base in ("out_of_box", "naive"):
            b = tps(base, key)
            if z is not None and b:
                out[f"{name}_vs_{base}"] = round(z / b, 2)
    return out


def table(result: dict) -> str:
    """One row per target and client count."""

    def ms(stats: dict, key: str) -> str:
        v = stats.get(key)
        return "-" if v is None else (f"{v / 1000:.1f} s" if v >= 10_000 else f"{v:.0f} ms")

    rows = [
        "| target | clients | tokens/s | TTFT p50 / p99 | ITL p50 / p99 | latency p50 | "
        "done / cut (no 1st token) | tokens per stream | client CPU | other work's CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in result["targets"].items():
        for c, r in t["clients"].items():
            g = r["generated_tokens"]
            rows.append(
                f"| {name} | {c} | {r['tokens_per_s']:.1f} | {ms(r['ttft_ms'], 'p50')} / "
                f"{ms(r['ttft_ms'], 'p99')} | {ms(r['itl_ms'], 'p50')} / {ms(r['itl_ms'], 'p99')}"
                f" | {ms(r['latency_ms'], 'p50')} | {r['requests_completed']} / "
                f"{r['requests_cut']} ({r['ttft_censored']}) | {g['min']}-{g['max']} | "
                f"{r['client_cpu_share_of_machine']:.1%} | "
                f"{r['foreign_cpu_share_of_machine']:.0%} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
