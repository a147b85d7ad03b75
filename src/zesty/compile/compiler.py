"""`compile_model`: the cache-aware entry point used by `zesty optimize` and by the server."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

from zesty.compile import artifacts, recipes
from zesty.compile.autotune import Autotuner, Candidate, Options, Reporter
from zesty.runtime.hardware import probe

log = logging.getLogger(__name__)


class CompileFailed(Exception):
    """No candidate could be built, or none met the accuracy budget."""


def artifact_key(model, head, options: Options) -> str:
    return artifacts.cache_key(
        model.path,
        head=head.name,
        task=model.task,
        options=options.key_part() | {"encoder_grid": recipes.GRID_VERSION},
        hardware=probe().fingerprint(),
    )


def base_manifest(model, key: str, options: Options) -> dict:
    """What every artifact's manifest.json records: the key, the model and its files, the
    hardware, the library versions and the options."""
    return {
        "key": key,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "id": model.model_id,
            "source": model.resolved.spec.describe(),
            "revision": model.resolved.revision or model.resolved.spec.revision,
            "files_sha256": artifacts.files_digest(model.path),
        },
        "task": model.task,
        "hardware": probe().as_dict(),
        "versions": artifacts.library_versions() | {"zesty_compiler": artifacts.COMPILER_VERSION},
        "options": options.key_part(),
    }


def compile_model(
    model, head, options: Options, *, out: Path | None = None, quiet: bool = False
) -> tuple[artifacts.Artifact, list[Candidate]]:
    """Return the artifact for (model, head, options): from the cache, or built now."""
    key = artifact_key(model, head, options)
    dest = out if out is not None else artifacts.artifact_dir(key)
    root = dest.parent if out is not None else None
    with artifacts.key_lock(key, root):
        existing = artifacts.Artifact.load(dest)
        if existing is not None and existing.manifest.get("key") == key:
            log.info("artifact %s found in the cache", key[:12])
            return existing, []
        if out is not None and out.exists() and any(out.iterdir()):
            raise CompileFailed(f"--out {out} exists and is not empty")
        tuner = Autotuner(model, head, options, Reporter(quiet))
        try:
            candidates, summary = tuner.run()
            chosen = next((c for c in candidates if c.verdict == "chosen"), None)
            if chosen is None:
                raise CompileFailed(
                    "no candidate met the accuracy budget: "
                    + "; ".join(f"{c.recipe.name}: {c.reason}" for c in candidates)
                )
            staging = artifacts.staging_dir(root)
            shutil.copy2(chosen.file, staging / "model.onnx")
            narrow = summary.pop("narrow") or {"kept": False}
            if narrow.get("kept"):
                shutil.copy2(narrow.pop("path"), staging / "narrow.onnx")
                narrow["file"] = "narrow.onnx"
            artifacts.copy_model_side_files(model.path, staging)
            manifest = base_manifest(model, key, options) | {
                "head": head.name,
                "recipe": chosen.recipe.as_dict(),
                "fp32_layers": list(chosen.recipe.fp32_layers),
                "accuracy": {
                    "budget": tuner.probe.budget,
                    "tune": chosen.tune,
                    "held_out": chosen.held_out,
                },
                "speed": {"chosen": chosen.latency.as_dict(), **summary},
                "narrow": narrow,
                "candidates": [c.row() for c in candidates],
            }
            return artifacts.publish(staging, dest, manifest), candidates
        finally:
            tuner.close()


def render_table(candidates: list[Candidate], manifest: dict) -> None:
    from zesty.compile.table import DASH, print_candidates

    budget = manifest["accuracy"]["budget"]
    ref = manifest["speed"]["reference"]["latency"]
    shapes = ("b1_s16_ms", "b1_s128_ms", "b32_s16_ms_per_item")

    def speed(c: Candidate) -> list[str]:
        lat = c.latency.as_dict() if c.latency else {}
        return [f"{lat[k]:.2f}" if k in lat else DASH for k in shapes]

    def accuracy(m: dict) -> str:
        return " / ".join(f"{m[k]:.4f}" for k in budget if k in m) or DASH

    print_candidates(
        f"zesty optimize — {manifest['model']['id']} ({manifest['task']})",
        ["b1×16 ms", "b1×128 ms", "b32×16 ms/item"],
        " / ".join(budget),
        [f"{ref[k]:.2f}" for k in shapes],
        candidates,
        speed,
        accuracy,
        width=140,
    )
