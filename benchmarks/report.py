"""Render the markdown tables of docs/benchmarks.md from the benchmarks' JSON results.

    .venv/bin/python benchmarks/report.py benchmarks/results/serve_embed.json \
        benchmarks/results/serve_knobs.json
"""

from __future__ import annotations

import json
import sys


def _ms(x: float) -> str:
    return f"{x:.1f}"


def _share(x: float) -> str:
    return "n/a" if x != x else f"{x:.1%}"  # NaN: not measured by that version


def serve_embed(r: dict) -> str:
    m, w = r["machine"], r["workload"]
    lines = [
        f"Run {r['date']} on {m.get('cpu', '?')} ({m['physical_cores']} cores, "
        f"ISA {', '.join(m.get('isa', []))}), load average at start "
        f"{m['load_average_at_start'][0]:.2f}, commit {r['versions'].get('git_commit', '?')}; "
        f"torch {r['versions'].get('torch')}, transformers {r['versions'].get('transformers')}.",
        f"Workload: {w['throughput_sentences']} distinct sentences "
        f"(tokens min/mean/max {'/'.join(str(x) for x in w['tokens_min_mean_max'])}), "
        f"{w['clients']} clients; latency: {w['latency_requests']} requests from 1 client; "
        f"repeated: {w['repeated_requests']} requests, {w['repeated_share']:.0%} repeats.",
        "",
        "| target | 1 client p50 / p90 / p99 ms | 32 clients req/s | 32 clients p50 / p99 ms "
        "| 30% repeats req/s | client CPU | other CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, t in r["targets"].items():
        lat, tp, rep = t["latency_1_client"], t["throughput"], t["repeated_30pct"]
        foreign = max(x.get("foreign_cpu_share_of_machine", float("nan")) for x in (lat, tp, rep))
        lines.append(
            f"| {name} | {_ms(lat['latency_ms']['p50'])} / {_ms(lat['latency_ms']['p90'])} / "
            f"{_ms(lat['latency_ms']['p99'])} | {tp['throughput_rps']:.1f} | "
            f"{_ms(tp['latency_ms']['p50'])} / {_ms(tp['latency_ms']['p99'])} | "
            f"{rep['throughput_rps']:.1f} | {tp['client_cpu_share_of_machine']:.1%} | "
            f"{_share(foreign)} |"
        )
    lines += [
        "",
        "| zesty | throughput vs best baseline (target >= 5x) | p50 latency vs best "
        "baseline (target <= 0.35x) | 30% repeats throughput vs baseline |",
        "|---|---|---|---|",
    ]
    ratios = r["ratios"]
    if "throughput_x" in ratios:  # results written before several zesty variants existed
        ratios = {**ratios, "zesty": ratios}
    for name, x in ratios.items():
        if not isinstance(x, dict):
            continue
        lines.append(
            f"| {name} | {x['throughput_x']}x ({'met' if x['throughput_met'] else 'missed'}) | "
            f"{x['p50_latency_x']}x ({'met' if x['p50_latency_met'] else 'missed'}) | "
            f"{x['repeated_30pct_throughput_x']}x |"
        )
    lines.append(
        f"\nBest baseline for throughput: `{ratios['best_baseline_throughput']}`; for latency: "
        f"`{ratios['best_baseline_latency']}` (`baseline_WxT`: W uvicorn workers x T torch threads)."
    )
    return "\n".join(lines)


def serve_knobs(r: dict) -> str:
    lines = [
        f"Run {r['date']}, {r['workload']['sentences']} distinct sentences per configuration, "
        f"{r['workload']['clients']} clients, commit {r['versions'].get('git_commit', '?')}.",
        "",
        "| configuration | req/s | p50 / p99 ms | mean batch | padding | 30% repeats req/s "
        "| other CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["configs"].items():
        tp, rep = c["throughput"], c["repeated_30pct"]
        foreign = max(x.get("foreign_cpu_share_of_machine", float("nan")) for x in (tp, rep))
        lines.append(
            f"| {name} | {tp['throughput_rps']:.1f} | {_ms(tp['latency_ms']['p50'])} / "
            f"{_ms(tp['latency_ms']['p99'])} | {tp['mean_batch_size']:.1f} | "
            f"{tp['mean_padding_ratio']:.1%} | {rep['throughput_rps']:.1f} | {_share(foreign)} |"
        )
    return "\n".join(lines)


def main() -> int:
    for path in sys.argv[1:]:
        with open(path) as f:
            r = json.load(f)
        render = {"serve_embed": serve_embed, "serve_knobs": serve_knobs}[r["benchmark"]]
        print(render(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
