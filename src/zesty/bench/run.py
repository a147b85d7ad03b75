"""One `zesty bench` run: for each workload, start each target in turn, measure, stop.

Targets never run at the same time (they would share the cores). Each target gets a warm-up
at the workload's headline client count, then one measurement per client count (ablation
steps only at the headline count), each with texts no other point of that target uses; the
same texts go to every target. Every point records the server's and the client's CPU time
and the CPU other processes took meanwhile, so a disturbed measurement is visible.

With `--rounds N` the whole list of targets runs N times in turn (A, B, A, B, ...; each
round a fresh server, so no cache carries over), and each point reports the round with the
median value, every round's value beside it (`rounds`): on a shared machine the ratio of
two medians moves less than the ratio of two single runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from zesty.bench import ceilings, models, targets
from zesty.bench.machine import machine, machine_busy_s, tree_cpu_s, versions
from zesty.bench.servers import Running, Target, TargetFailed
from zesty.bench.workloads import Corpus, Workload, with_repeats, write_bodies


@dataclass
class BenchConfig:
    workloads: list[Workload]
    against: set[str]
    clients: list[int] | None  # None: each workload's own (Workload.clients)
    duration: float
    out: Path
    quick: bool = False
    url: str | None = None
    measure_ceilings: bool = True
    warmup: float = 3.0
    texts_per_point: int = 20000  # distinct texts per point: ~2,000 req/s for 10 s
    rounds: int = 1
    command: str = ""
    model_dirs: dict[str, Path] = field(default_factory=dict)


class Bench:
    def __init__(self, cfg: BenchConfig, ui) -> None:
        self.cfg = cfg
        self.ui = ui  # zesty.bench.cli.UI: log(), point_started(), point_done()
        self.tmp = Path(tempfile.mkdtemp(prefix="zesty-bench-"))
        self.ceilings: dict = {}
        self.cores = os.cpu_count() or 1

    def run(self) -> dict:
        cfg = self.cfg
        result: dict = {
            "benchmark": "zesty bench",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": cfg.command,
            "machine": machine(),
            "versions": versions(),
            "config": {
                "workloads": [w.name for w in cfg.workloads],
                "against": sorted(cfg.against),
                "clients": cfg.clients or {w.name: list(w.clients) for w in cfg.workloads},
                "duration_s": cfg.duration,
                "warmup_s": cfg.warmup,
                "quick": cfg.quick,
                "url": cfg.url,
                "rounds": cfg.rounds,
            },
        }
        t0 = time.monotonic()
        if cfg.measure_ceilings:
            self.ui.log("measuring this machine's ceilings (GEMM FLOP/s, memory bandwidth)")
            self.ceilings = ceilings.measure(quick=cfg.quick)
            self.ui.log(
                f"peak fp32 GEMM {self.ceilings['gemm_fp32_gflops']} GFLOP/s, "
                f"memory bandwidth {self.ceilings['memory_bandwidth_gbs']} GB/s"
            )
        result["ceilings"] = self.ceilings
        result["workloads"] = {}
        for w in cfg.workloads:
            result["workloads"][w.name] = self.workload(w)
        result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        result["wall_s"] = round(time.monotonic() - t0, 1)
        return result

    # -- one workload -----------------------------------------------------------------------

    def workload(self, w: Workload) -> dict:
        cfg = self.cfg
        self.ui.log(f"[bold]{w.name}[/]: {w.description}")
        model_dir = cfg.model_dirs.get(w.name) or models.get(w.model, tiny=cfg.quick)
        weights = ceilings.matmul_weights(model_dir)
        corpus = Corpus(model_dir, w.tokens, seed=hash(w.name) % 1000)
        clients = list(cfg.clients or w.clients)
        per_point = cfg.texts_per_point if w.kind == "encode" else max(clients) * 8
        texts = {"warmup": corpus.take(min(per_point, 500))}
        for c in clients:
            texts[f"c{c}"] = corpus.take(per_point)
        if w.name == "embed":
            texts["repeats"] = with_repeats(corpus.take(int(per_point * 0.7)), 0.3, seed=5)
        self.tokens_mean = corpus.mean_tokens()
        headline = w.headline_clients if w.headline_clients in clients else max(clients)
        if cfg.url:
            tlist = [targets.external(cfg.url, w)]
        else:
            tlist = targets.for_workload(w, model_dir, cfg.against, self.cores, self.ui.log)
        out: dict = {
            "description": w.description,
            "model": w.model + (" (tiny)" if cfg.quick else ""),
            "model_dir": str(model_dir),
            "weights": weights,
            "text_tokens_mean": round(corpus.mean_tokens(), 1),
            "text_tokens_range": list(w.tokens),
            "new_tokens": w.new_tokens or None,
            "clients": clients,
            "headline_clients": headline,
            "goals": w.goals,
            "targets": {},
        }
        runs: dict[str, list[dict]] = {t.name: [] for t in tlist}
        for n in range(cfg.rounds):
            if cfg.rounds > 1:
                self.ui.log(f"{w.name}: round {n + 1} of {cfg.rounds}")
            for t in tlist:
                plan = [headline] if t.name.startswith("abl-") else clients
                runs[t.name].append(self.target(t, w, texts, plan, weights, headline))
        key = "tokens_per_s" if w.kind == "generate" else "throughput_rps"
        for name, recs in runs.items():
            out["targets"][name] = merge_rounds(recs, key)
        return out

    def target(self, t: Target, w: Workload, texts, plan, weights, headline) -> dict:
        rec: dict = {
            "label": t.label,
            "role": t.role,
            "ablation_step": t.ablation_step,
            "route": f"POST {t.path} ({t.dialect})",
        }
        if t.versions:
            rec["versions"] = t.versions
        if t.error:
            self.ui.log(f"[red]{w.name}/{t.name} cannot run here[/]: {t.error[:300]}")
            rec["error"] = t.error
            return rec
        self.ui.log(f"{w.name}/{t.name}: starting {t.label}")
        srv = Running(t, self.cfg.out / "logs" / w.name)
        try:
            rec["command"] = getattr(srv, "command", None)

            def waiting(elapsed, info):
                self.ui.status(f"{w.name}/{t.name}: waiting for readiness ({elapsed:.0f} s)")

            srv.wait_ready(waiting)
            rec["startup_s"] = srv.startup_s
            if srv.info:
                m = srv.info["models"][0]
                rec["served"] = {
                    "backend": m.get("backend"),
                    "artifact": m.get("artifact"),
                    "compile": m.get("compile"),
                }
            bodies = {
                k: write_bodies(
                    self.tmp / f"{t.name}-{k}.jsonl", t.dialect, v, w, t.model_id or "model"
                )
                for k, v in texts.items()
            }
            stream = w.kind == "generate"
            self.ui.status(f"{w.name}/{t.name}: warm-up")
            self.measure(srv, t, bodies["warmup"], headline, self.cfg.warmup, stream)
            rec["points"] = {}
            # a stream cut at a deadline keeps running in a server that does not cancel on
            # disconnect (the pipeline apps): start those afresh for every point
            restart = stream and not t.cancels_on_disconnect and not t.url
            for c in plan:
                if restart:
                    srv.stop()
                    srv = Running(t, self.cfg.out / "logs" / w.name)
                    srv.wait_ready(waiting)
                self.ui.status(f"{w.name}/{t.name}: {c} clients for {self.cfg.duration:g} s")
                p = self.measure(srv, t, bodies[f"c{c}"], c, self.cfg.duration, stream)
                p["roofline"] = self.roofline(w, weights, p, c)
                rec["points"][str(c)] = p
                self.ui.point_done(w, t, c, p)
            if "repeats" in bodies and not t.name.startswith("abl-"):
                self.ui.status(f"{w.name}/{t.name}: 30% repeats, {headline} clients")
                p = self.measure(srv, t, bodies["repeats"], headline, self.cfg.duration, stream)
                rec["repeats_30pct"] = p
                self.ui.point_done(w, t, f"{headline} (30% repeats)", p)
        except (TargetFailed, subprocess.CalledProcessError, OSError, ValueError) as exc:
            msg = str(exc)
            if isinstance(exc, subprocess.CalledProcessError):
                msg = f"load generator failed: {exc.stderr[-800:] if exc.stderr else exc}"
            self.ui.log(f"[red]{w.name}/{t.name} failed[/]: {msg[:400]}")
            rec["error"] = msg[-2000:]
            if srv.proc is not None:
                rec["log_tail"] = srv.tail(1500)
        finally:
            srv.stop()
        return rec

    # -- one point ---------------------------------------------------------------------------

    def measure(self, srv: Running, t: Target, bodies: Path, clients: int, duration, stream):
        cmd = [sys.executable, "-m", "zesty.bench.loadgen", "--url", srv.url + t.path]
        cmd += ["--bodies", str(bodies), "-c", str(clients), "--duration", str(duration)]
        if stream:
            cmd.append("--stream")
        cpu0 = tree_cpu_s(srv.pid) if srv.pid else 0.0
        busy0 = machine_busy_s()
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
        r = json.loads(done.stdout)
        server_cpu = (tree_cpu_s(srv.pid) - cpu0) if srv.pid else None
        wall = max(r["wall_s"], 1e-9)
        r["server_cpu_s"] = round(server_cpu, 3) if server_cpu is not None else None
        foreign = machine_busy_s() - busy0 - (server_cpu or 0.0) - r["client_cpu_s"]
        r["client_cpu_share_of_machine"] = round(r["client_cpu_s"] / (wall * self.cores), 4)
        r["other_cpu_share_of_machine"] = round(max(foreign, 0.0) / (wall * self.cores), 4)
        ok = sum(v for k, v in r["statuses"].items() if k.startswith("2"))
        if r["requests_done"] and not ok:
            raise TargetFailed(f"no successful answers: statuses {r['statuses']}")
        return r

    def roofline(self, w: Workload, weights: dict, p: dict, clients: int) -> dict | None:
        if not self.ceilings:
            return None
        if w.kind == "encode":
            mean_tokens = self.tokens_mean
            bound = ceilings.encoder_roofline_rps(self.ceilings, weights, mean_tokens)
            return {"bound": round(bound, 2), "unit": "req/s", "fraction": _frac(p, bound)}
        bound = ceilings.decode_roofline_tps(self.ceilings, weights, clients)
        return {"bound": round(bound, 2), "unit": "tokens/s", "fraction": _frac(p, bound)}


def merge_rounds(recs: list[dict], key: str) -> dict:
    """One target's record from its rounds: per point, the round with the median `key` (the
    lower middle for an even count), with every round's value in `rounds`. A round that
    failed is listed in `round_errors`; the others still count."""
    if len(recs) == 1:
        return recs[0]
    ok = [r for r in recs if "error" not in r]
    merged = dict(ok[0] if ok else recs[-1])
    errors = [r["error"] for r in recs if "error" in r]
    if errors:
        merged["round_errors"] = errors
    if not ok:
        return merged
    merged.pop("error", None)
    points: dict = {}
    for c in ok[0].get("points", {}):
        merged_point = _median_round([r["points"][c] for r in ok if c in r.get("points", {})], key)
        if merged_point is not None:
            points[c] = merged_point
    merged["points"] = points
    repeats = _median_round([r["repeats_30pct"] for r in ok if "repeats_30pct" in r], key)
    if repeats is not None:
        merged["repeats_30pct"] = repeats
    return merged


def _median_round(points: list[dict], key: str) -> dict | None:
    if not points:
        return None
    ranked = sorted(points, key=lambda p: p.get(key) or 0.0)
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["rounds"] = [p.get(key) for p in points]
    if wrapped := [p.get("wrapped") or 0 for p in points if p.get("wrapped")]:
        chosen["wrapped"] = max(wrapped)  # any round that ran out of texts is reported
    return chosen


def _frac(p: dict, bound: float) -> float:
    value = p.get("tokens_per_s", p["throughput_rps"])
    return round(value / bound, 4) if bound else 0.0
