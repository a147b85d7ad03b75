"""`zesty bench`: the command line, progress display, and the run's files."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from zesty.bench.targets import AGAINST
from zesty.bench.workloads import ALIASES, WORKLOADS

DEFAULT_WORKLOADS = ["embed", "classify", "generate"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark zesty against an out-of-box baseline and peer servers on this machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start each server under test on loopback in turn (never two at once), "
        "drive it with a lean closed-loop load generator in its own process (its CPU share is "
        "reported), and write results.json, results.md and PNG charts to --out. Also measures "
        "this machine's ceilings (peak fp32 GEMM FLOP/s, memory bandwidth) and reports each "
        "result as a fraction of its roofline.\n\n"
        "workloads: "
        + "; ".join(f"{n}: {w.description}" for n, w in WORKLOADS.items())
        + "; generate = generate-gpt2 + generate-smollm2.\n\n"
        "Models are built from configs into the zesty cache on first use (random weights "
        "except MiniLM); peers are pip-installed into their own virtual environments there.",
    )
    p.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"workloads to run (default: {' '.join(DEFAULT_WORKLOADS)}); one of "
        f"{', '.join([*WORKLOADS, *ALIASES])}",
    )
    p.add_argument(
        "--against",
        default=None,
        metavar="LIST",
        help="comma-separated comparisons besides zesty as shipped: "
        f"{', '.join(AGAINST)}, or peer:NAME for one peer; peers = one variant per engine as "
        "its users run it, peers-all = every variant (default: all but peers-all; with --quick: "
        "baseline,naive,ablation)",
    )
    p.add_argument(
        "--clients",
        default=None,
        metavar="N,N,...",
        help="concurrent client counts to measure each target at (default: 1,4,16,32 for "
        "the encoders, 1,4,16 for generation; with --quick 1,4); ablation steps run only at "
        "a workload's headline count (32 for encoders, 16 for generation, or the largest "
        "given)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="seconds per measurement point (default 10; --quick 2)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="run the targets N times in turn (A, B, A, B, ...; a fresh server each round) "
        "and report each point's median round, every round's value beside it (default 1; "
        "use 3 on a shared, noisy machine)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        metavar="S",
        help="seconds of warm-up per target before measuring (default 3; --quick 0.5)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where results.json, results.md, charts and server logs go "
        "(default: bench-results/<date>-<time>)",
    )
    p.add_argument(
        "--url",
        default=None,
        help="measure a server already running instead of starting targets (encoders: "
        "POST {url}/ with {'inputs'}; generation: POST {url}/generate_stream)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny random models, short points: checks the whole pipeline in a few minutes "
        "(the numbers mean nothing)",
    )
    p.add_argument(
        "--no-ceilings", action="store_true", help="skip measuring GEMM FLOP/s and bandwidth"
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="WORKLOAD=DIR",
        help="use this model folder for a workload instead of the built one (repeatable)",
    )


def _ints(text: str, flag: str) -> list[int]:
    try:
        out = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not out or out[0] < 1:
        raise ValueError(f"{flag} needs positive integers, got {text!r}")
    return out


def config_from(ns: argparse.Namespace, argv: list[str] | None = None):
    from zesty.bench.run import BenchConfig
    from zesty.bench.workloads import expand

    workloads = expand(ns.workloads or DEFAULT_WORKLOADS)
    against_text = ns.against
    if against_text is None:
        against_text = (
            "baseline,naive,ablation"
            if ns.quick
            else ",".join(a for a in AGAINST if a != "peers-all")
        )
    against = {a.strip() for a in against_text.split(",") if a.strip()}
    from zesty.bench.peers import PEERS

    unknown = against - set(AGAINST) - {"none"} - {f"peer:{name}" for name in PEERS}
    if unknown:
        raise ValueError(
            f"unknown --against {', '.join(sorted(unknown))} (known: {', '.join(AGAINST)}, "
            f"peer:NAME with NAME one of {', '.join(PEERS)})"
        )
    clients = _ints(ns.clients, "--clients") if ns.clients else ([1, 4] if ns.quick else None)
    duration = ns.duration if ns.duration is not None else (2.0 if ns.quick else 10.0)
    warmup = ns.warmup if ns.warmup is not None else (0.5 if ns.quick else 3.0)
    if duration <= 0:
        raise ValueError("--duration must be positive")
    if ns.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {ns.rounds}")
    model_dirs = {}
    for item in ns.model:
        name, sep, path = item.partition("=")
        if not sep or name not in WORKLOADS or not Path(path).is_dir():
            raise ValueError(f"--model takes WORKLOAD=DIR with an existing folder, got {item!r}")
        model_dirs[name] = Path(path)
    out = ns.out or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")
    return BenchConfig(
        workloads=workloads,
        against=against,
        clients=clients,
        duration=duration,
        out=out,
        quick=ns.quick,
        url=ns.url,
        measure_ceilings=not ns.no_ceilings,
        warmup=warmup,
        texts_per_point=400 if ns.quick else 20000,
        rounds=ns.rounds,
        command="zesty bench " + shlex.join(argv if argv is not None else sys.argv[2:]),
        model_dirs=model_dirs,
    )


class UI:
    """Progress on the terminal: a status line while measuring, one line per result."""

    def __init__(self, console) -> None:
        self.console = console
        self.live = console.status("starting")

    def log(self, msg: str) -> None:
        self.console.log(msg)

    def status(self, msg: str) -> None:
        self.live.update(msg)

    def point_done(self, w, t, clients, p: dict) -> None:
        if "tokens_per_s" in p:
            what = (
                f"{p['tokens_per_s']:.1f} tok/s, TTFT p50 {p['ttft_ms']['p50']:.0f} ms, "
                f"ITL p50 {p['itl_ms']['p50']:.1f} ms"
            )
        else:
            lat = p["latency_ms"]
            what = (
                f"{p['throughput_rps']:.1f} req/s, p50 {lat['p50']:.1f} / p99 {lat['p99']:.1f} ms"
            )
        roof = (p.get("roofline") or {}).get("fraction")
        extra = f", {roof:.1%} of roofline" if roof is not None else ""
        self.console.log(
            f"  {w.name}/{t.name} @ {clients} clients: {what}{extra} "
            f"(client CPU {p['client_cpu_share_of_machine']:.1%}, "
            f"other {p['other_cpu_share_of_machine']:.1%})"
        )


def main(ns: argparse.Namespace, argv: list[str] | None = None) -> int:
    from rich.console import Console

    from zesty.bench import report
    from zesty.bench.run import Bench

    console = Console(stderr=True)
    try:
        cfg = config_from(ns, argv)
    except ValueError as exc:
        print(f"zesty bench: {exc}", file=sys.stderr)
        return 2
    ui = UI(console)
    try:
        with ui.live:
            result = Bench(cfg, ui).run()
    except KeyboardInterrupt:
        print("zesty bench: interrupted", file=sys.stderr)
        return 130
    paths = report.write(result, cfg.out)
    console.print(paths["markdown"].read_text(), markup=False, highlight=False)
    console.print(f"results: {paths['json']}  table: {paths['markdown']}")
    return 0
