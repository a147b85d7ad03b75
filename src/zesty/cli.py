"""`zesty` command line. Flags are generated from `zesty.settings`, so `--help`, the
environment (`ZESTY_<NAME>`) and the code never disagree."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import ByteSize
from pydantic.fields import FieldInfo

from zesty import __version__
from zesty.context import RequestIdFilter
from zesty.settings import Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(group: argparse._ArgumentGroup, name: str, field: FieldInfo) -> None:
    annotation = field.annotation
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        annotation, origin = args[0], typing.get_origin(args[0])
    default = field.get_default(call_default_factory=True)
    if isinstance(default, ByteSize) and default:
        default = default.human_readable()
    help_text = f"{field.description or ''} (env ZESTY_{name.upper()}; default: {default})"
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if annotation is bool:
        group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
    elif origin is Literal:
        group.add_argument(_flag(name), choices=typing.get_args(annotation), **kwargs)
    elif origin is list and typing.get_args(annotation) == (str,):
        # repeatable: --api-key a --api-key b
        group.add_argument(_flag(name), action="append", type=str, metavar="STR", **kwargs)
    elif annotation is ByteSize:  # "4GB", "512MiB" or plain bytes; pydantic parses it
        group.add_argument(_flag(name), type=str, metavar="SIZE", **kwargs)
    elif annotation is Path:
        group.add_argument(_flag(name), type=str, metavar="PATH", **kwargs)
    elif annotation in (int, float, str):
        group.add_argument(
            _flag(name), type=annotation, metavar=annotation.__name__.upper(), **kwargs
        )
    else:  # pragma: no cover - a new settings type must be taught here
        raise TypeError(f"no CLI mapping for setting {name}: {annotation}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zesty",
        description="zesty: fast inference for Hugging Face transformer models.",
    )
    parser.add_argument("--version", action="version", version=f"zesty {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve models over HTTP (HF Inference API, OpenAI and TEI routes)",
        description="Serve models over HTTP. With no MODEL, serves the embedded default "
        "(sentence-transformers/all-MiniLM-L6-v2), fully offline.",
    )
    serve.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="a Hub id (org/name[@revision]), a local folder (served under its folder name), "
        "or NAME=REF to choose the id clients use",
    )
    _add_optimize(sub)
    from zesty.bench.cli import add_parser as _add_bench

    _add_bench(sub)
    for group_name, group_cls in Settings.GROUPS.items():
        group = serve.add_argument_group(f"{group_name} settings", group_cls.__doc__)
        for name, field in group_cls.model_fields.items():
            _add_field(group, name, field)
    return parser


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    handler.addFilter(RequestIdFilter())  # every line carries the request id ("-" outside one)
    # onnxruntime's quantizer logs this advice on the root logger for every model
    handler.addFilter(lambda r: not r.getMessage().startswith("Please consider pre-processing"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def serve(ns: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from zesty import server
    from zesty.http.app import create_app
    from zesty.models.reference import ModelSpec

    overrides = {k: v for k, v in vars(ns).items() if k not in ("command", "models")}
    try:
        settings = Settings.from_overrides(overrides)
        specs = [ModelSpec.parse(m, settings.model.revision) for m in ns.models]
    except (ValidationError, ValueError) as exc:
        print(f"zesty serve: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.server.log_level, settings.server.log_format)
    app = create_app(settings, specs)
    return server.run(app, settings)


def _add_optimize(sub) -> None:
    p = sub.add_parser(
        "optimize",
        help="compile a model for this machine: try every candidate, check accuracy, pick",
        description="Export MODEL to ONNX, build candidate graphs (ORT optimizations, "
        "transformer fusions, dynamic/static/sensitivity-guided int8, fp16 on CUDA), check "
        "each against the fp32 PyTorch reference on a validation corpus, time each on this "
        "machine, and write the fastest one within the accuracy budget as an artifact "
        "(ONNX model + tokenizer + manifest.json). Without --out the artifact goes to the "
        "cache (ZESTY_CACHE) that `zesty serve` reads.",
    )
    p.add_argument("model", metavar="MODEL", help="Hub id (org/name[@rev]) or local folder")
    p.add_argument("--task", help="task to compile for (default: detected)")
    p.add_argument(
        "--target",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="hardware to compile for (auto: cuda if ONNX Runtime can use a GPU)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "int8", "fp16"],
        default="auto",
        help="restrict candidates to one precision (auto: all)",
    )
    p.add_argument(
        "--budget",
        default="",
        metavar="METRIC=MIN,...",
        help="accuracy floors overriding the defaults, e.g. min_cosine=0.99,"
        "mean_cosine=0.998 or top1_agreement=0.995",
    )
    p.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="extra validation/calibration texts, one per line",
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="write the artifact here instead of the cache"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: physical cores)"
    )
    p.add_argument(
        "--measure-seconds",
        type=float,
        default=0.8,
        help="time spent timing each shape of each candidate",
    )
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights")
    p.add_argument("--quiet", action="store_true", help="no progress or table, only errors")


def optimize(ns: argparse.Namespace) -> int:
    from zesty.compile.autotune import Options
    from zesty.compile.compiler import CompileFailed, compile_model, render_table
    from zesty.compile.export import ExportError
    from zesty.errors import ModelLoadError
    from zesty.models.reference import ModelSpec
    from zesty.runtime.hardware import cuda_available_in_ort
    from zesty.serving.model import load_reference_model
    from zesty.settings import physical_cores
    from zesty.tasks.registry import get_task

    setup_logging("warning" if ns.quiet else "info", "text")
    try:
        from zesty.settings import parse_budget

        budget = parse_budget(ns.budget)
        spec = ModelSpec.parse(ns.model)
    except ValueError as exc:
        print(f"zesty optimize: {exc}", file=sys.stderr)
        return 2
    threads = ns.threads or physical_cores()
    target = ns.target
    if target == "auto":
        target = "cuda" if cuda_available_in_ort() else "cpu"
    import torch

    torch.set_num_threads(threads)
    try:
        model = load_reference_model(spec, task=ns.task, allow_pickle=ns.allow_pickle)
        options = Options(
            target=target,
            precision=ns.precision,
            budget=budget,
            calibration=ns.calibration,
            threads=threads,
            measure_budget_s=ns.measure_seconds,
        )
        if getattr(model, "generative", False):
            from zesty.compile import generation, generation_table

            artifact, candidates = generation.compile_generative(
                model, options, out=ns.out, quiet=ns.quiet
            )
            table = generation_table.render_table
        else:
            head = get_task(model.task).head_for(model)
            artifact, candidates = compile_model(model, head, options, out=ns.out, quiet=ns.quiet)
            table = render_table
    except (ModelLoadError, ExportError, CompileFailed) as exc:
        print(f"zesty optimize: {exc}", file=sys.stderr)
        return 1
    if not ns.quiet:
        if candidates:
            table(candidates, artifact.manifest)
        recipe = artifact.manifest["recipe"]["name"]
        narrow = artifact.manifest.get("narrow") or {}
        if narrow.get("kept"):
            recipe += f" (one-core lanes: packed rows, {narrow['time_ratio']}x the time)"
        print(f"chosen: {recipe}; artifact: {artifact.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command == "serve":
        return serve(ns)
    if ns.command == "optimize":
        return optimize(ns)
    if ns.command == "bench":
        from zesty.bench.cli import main as bench

        return bench(ns, argv)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
