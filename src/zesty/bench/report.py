"""Write a run's results: results.json, results.md (Markdown tables) and PNG charts.

Charts, per workload: throughput vs clients (one line per target), latency percentiles at
the headline client count (TTFT and inter-token latency for generation), and the ablation
as a waterfall (each step's gain on top of the previous one).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from zesty.bench.summary import metric, summarize, value

KIND = {"generate-gpt2": "generate", "generate-smollm2": "generate"}


def _clients(clients) -> str:
    """`config.clients`: one list for every workload, or each workload's own."""
    if isinstance(clients, dict):
        return "; ".join(f"{w} {', '.join(map(str, cs))}" for w, cs in clients.items())
    return ", ".join(map(str, clients))


def kind_of(name: str) -> str:
    return KIND.get(name, "encode")


def write(result: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    for name, wres in result["workloads"].items():
        wres["summary"] = summarize(wres, kind_of(name))
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    charts = {}
    for name, wres in result["workloads"].items():
        charts[name] = _charts(name, wres, out)
    paths["markdown"].write_text(markdown(result, charts))
    for name, files in charts.items():
        for kind, path in files.items():
            paths[f"{name}-{kind}"] = path
    return paths


# -- Markdown ------------------------------------------------------------------------------


def _f(x, digits=1) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _x(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


def markdown(result: dict, charts: dict[str, dict[str, Path]], image_prefix: str = "") -> str:
    m, v, c = result["machine"], result["versions"], result["config"]
    lines = [
        f"Run {result['date']} (`{result.get('command') or 'zesty bench'}`), "
        f"{result.get('wall_s', '?')} s.",
        "",
        f"Machine: {m.get('cpu')}, {m.get('physical_cores')} cores "
        f"({m.get('logical_cpus')} logical), {m.get('memory_gib', '?')} GiB, ISA "
        f"{', '.join(m.get('isa', []))}; load average before {m.get('load_average_before')}, "
        f"after {m.get('load_average_after')}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Clients: {_clients(c['clients'])}. {c['duration_s']} s per point after a {c['warmup_s']} s "
        f"warm-up{' (quick mode: tiny models, numbers not meaningful)' if c['quick'] else ''}"
        + (
            f"; {c['rounds']} rounds (targets in turn, a fresh server each round): each value "
            "is the median round's, the rounds' values in brackets."
            if c.get("rounds", 1) > 1
            else "."
        ),
    ]
    ceil = result.get("ceilings") or {}
    if ceil:
        lines.append(
            f"Ceilings measured here: peak fp32 GEMM {ceil['gemm_fp32_gflops']} GFLOP/s, "
            f"memory bandwidth {ceil['memory_bandwidth_gbs']} GB/s."
        )
    for name, wres in result["workloads"].items():
        lines += ["", *_workload_md(name, wres, charts.get(name, {}), image_prefix)]
    return "\n".join(lines) + "\n"


def _workload_md(name: str, wres: dict, charts: dict, prefix: str) -> list[str]:
    kind = kind_of(name)
    key, unit = metric(kind)
    s = wres["summary"]
    clients = sorted({int(c) for r in wres["targets"].values() for c in (r.get("points") or {})})
    w = wres["weights"]
    out = [
        f"### {name}",
        "",
        f"{wres['description']}. Model `{wres['model']}` ({w['parameters'] / 1e6:.1f}M "
        f"parameters, {w['matmul_parameters'] / 1e6:.1f}M in matmuls); texts average "
        f"{wres['text_tokens_mean']} tokens.",
        "",
        f"| target | {' | '.join(f'{c} clients {unit}' for c in clients)} | "
        f"p50 / p99 ms @1 | p50 / p99 ms @{s['headline_clients']} | roofline @"
        f"{s['headline_clients']} | client CPU | other CPU |",
        "|---" * (len(clients) + 6) + "|",
    ]
    errors = []
    for tname, rec in wres["targets"].items():
        if rec.get("error"):
            errors.append(
                f"- `{tname}` ({rec.get('label')}): **could not run**: {_one_line(rec['error'])}"
            )
            continue
        cells = [_cell(rec, c, key) for c in clients]
        lat = "ttft_ms" if kind == "generate" else "latency_ms"
        p1 = (rec["points"].get("1") or {}).get(lat)
        ph = (rec["points"].get(str(s["headline_clients"])) or {}).get(lat)
        hp = rec["points"].get(str(s["headline_clients"])) or {}
        roof = (hp.get("roofline") or {}).get("fraction")
        client = max(p.get("client_cpu_share_of_machine", 0) for p in rec["points"].values())
        other = max(p.get("other_cpu_share_of_machine", 0) for p in rec["points"].values())
        served = rec.get("served") or {}
        label = f"`{tname}`" + (f" ({served['backend']})" if served.get("backend") else "")
        out.append(
            f"| {label} | {' | '.join(cells)} | "
            f"{_f(p1 and p1['p50'])} / {_f(p1 and p1['p99'])} | "
            f"{_f(ph and ph['p50'])} / {_f(ph and ph['p99'])} | "
            f"{'–' if roof is None else f'{roof:.1%}'} | {client:.1%} | {other:.1%} |"
        )
    if kind == "generate":
        out += ["", "Latency in the table is time to first token (TTFT)."]
        censored = [
            f"`{tname}` {n} of {p['ttft_ms']['n']} at {c}"
            for tname, rec in wres["targets"].items()
            for c, p in (rec.get("points") or {}).items()
            if (n := p.get("ttft_censored"))
        ]
        if censored:
            out += [
                "Streams with no first token by a point's deadline count at the deadline, so "
                "these TTFTs are lower bounds (censored streams of all at N clients: "
                + "; ".join(censored)
                + ")."
            ]
        out += ["Inter-token latency:", ""]
        out += [f"| target | ITL p50 / p90 / p99 ms @{s['headline_clients']} |", "|---|---|"]
        for tname, rec in wres["targets"].items():
            hp = (rec.get("points") or {}).get(str(s["headline_clients"]))
            if hp and hp.get("itl_ms"):
                itl = hp["itl_ms"]
                out.append(f"| `{tname}` | {itl['p50']} / {itl['p90']} / {itl['p99']} |")
    if errors:
        out += ["", *errors]
    if wrapped := _wrapped(wres):
        out += [
            "",
            "**Ran out of distinct texts** (the load generator started over, so the server's "
            "caches saw repeats that the workload does not have): " + "; ".join(wrapped) + ".",
        ]
    out += ["", "| ratio | measured | goal |", "|---|---|---|"]
    shown = {g["goal"]: g for g in s["goals"]}
    for k in (
        "vs_baseline_x",
        "vs_best_peer_x",
        "vs_naive_x",
        "batch1_latency_x",
        "repeats_vs_baseline_x",
        "ttft_p50_vs_baseline_x",
    ):
        if k not in s:
            continue
        g = shown.get(k)
        goal = "–"
        if g:
            cmp = "<=" if k.endswith("latency_x") else ">="
            verdict = (
                "met"
                if g["met"]
                else (
                    f"**missed** (short by {g['short_by_x']}x)"
                    if g["met"] is False
                    else "not measured"
                )
            )
            goal = f"{cmp} {g['target']}x: {verdict}"
        extra = f" ({s['best_peer']})" if k == "vs_best_peer_x" else ""
        out.append(f"| {k}{extra} | {_x(s[k])} | {goal} |")
    if s["ablation"]:
        out += [
            "",
            f"Ablation at {s['headline_clients']} clients:",
            "",
            f"| step | {unit} | step gain | cumulative |",
            "|---|---|---|---|",
        ]
        for st in s["ablation"]:
            val = "could not run" if st["error"] else _f(st["value"])
            out.append(f"| {st['label']} | {val} | {_x(st['step_x'])} | {_x(st['cumulative_x'])} |")
    if charts:
        out.append("")
        out += [f"![{name} {k}]({prefix}{p.name})" for k, p in charts.items()]
    return out


def _wrapped(wres: dict) -> list[str]:
    """Points whose requests outnumbered their texts (merge_rounds keeps any round's count)."""
    found = []
    for tname, rec in wres["targets"].items():
        places = {f"@{c}": p for c, p in (rec.get("points") or {}).items()}
        if rec.get("repeats_30pct"):
            places["30% repeats"] = rec["repeats_30pct"]
        found += [
            f"{tname} {where}: {p['wrapped']} requests reused a text"
            for where, p in places.items()
            if p.get("wrapped")
        ]
    return found


def _cell(rec: dict, clients: int, key: str) -> str:
    """A point's value, with every round's in brackets when there were several."""
    point = (rec.get("points") or {}).get(str(clients)) or {}
    rounds = point.get("rounds") or []
    text = _f(point.get(key))
    if len(rounds) > 1:
        text += " (" + ", ".join(_f(r) for r in rounds) + ")"
    return text


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- charts --------------------------------------------------------------------------------


def _charts(name: str, wres: dict, out: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # charts are optional: `pip install zesty[bench]`
        return {}
    kind = kind_of(name)
    key, unit = metric(kind)
    s = wres["summary"]
    ok = {n: r for n, r in wres["targets"].items() if r.get("points")}
    files: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n, r in ok.items():
        cs = sorted(int(c) for c in r["points"])
        if len(cs) > 1:
            ax.plot(cs, [value(r, c, key) for c in cs], marker="o", label=n)
        else:
            ax.scatter(cs, [value(r, c, key) for c in cs], label=n, marker="x")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(unit)
    ax.set_title(f"{name}: throughput vs clients")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    files["throughput"] = _save(fig, out / f"{name}-throughput.png")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    h = str(s["headline_clients"])
    series = ["ttft_ms", "itl_ms"] if kind == "generate" else ["latency_ms"]
    names = [n for n, r in ok.items() if h in r["points"]]
    width = 0.8 / (3 * len(series))
    for si, field in enumerate(series):
        for qi, q in enumerate(("p50", "p90", "p99")):
            xs = [i + (si * 3 + qi) * width for i in range(len(names))]
            ys = [ok[n]["points"][h][field][q] for n in names]
            ax.bar(xs, ys, width, label=f"{field[:-3]} {q}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title(f"{name}: latency percentiles at {h} clients")
    ax.legend(fontsize=7)
    files["latency"] = _save(fig, out / f"{name}-latency.png")

    steps = [st for st in s["ablation"] if st["value"]]
    if len(steps) > 1:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        prev = 0.0
        for i, st in enumerate(steps):
            color = "tab:gray" if i == 0 else ("tab:green" if st["value"] >= prev else "tab:red")
            ax.bar(i, st["value"] - prev, bottom=prev, color=color)
            ax.text(
                i, st["value"], f"{st['cumulative_x']:.2f}x", ha="center", va="bottom", fontsize=8
            )
            prev = st["value"]
        names = [textwrap.fill(st["label"], 16) for st in steps]
        ax.set_xticks(range(len(steps)), names, fontsize=7)
        ax.set_ylabel(f"{unit} at {h} clients")
        ax.set_title(f"{name}: ablation (each bar adds one step)")
        files["ablation"] = _save(fig, out / f"{name}-ablation.png")
    return files


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Print a results.json as Markdown (for docs/benchmarks.md), charts under a prefix."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("results", type=Path)
    ap.add_argument("--image-prefix", default="", help="path of the PNG charts from the page")
    args = ap.parse_args(argv)
    result = json.loads(args.results.read_text())
    folder = args.results.parent
    charts = {
        name: {
            kind: folder / f"{name}-{kind}.png"
            for kind in ("throughput", "latency", "ablation")
            if (folder / f"{name}-{kind}.png").exists()
        }
        for name in result["workloads"]
    }
    print(markdown(result, charts, args.image_prefix), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
