"""The encoder peers: Infinity (`infinity-emb`), run as its users run it (`infinity_emb v2`).

`infinity` is its default torch engine; `infinity-onnx` adds `--engine optimum` (ONNX
Runtime through Optimum, its CPU recommendation). Embeddings are measured on its
OpenAI-style `/embeddings`, classification on `/classify`.

Infinity's ONNX engine does not export a model itself: it looks for `*.onnx` files in the
model repo (the Hub's sentence-transformers repos carry `onnx/model.onnx`) and fails on a
folder without one (`ValueError: No onnx files found`). So for `infinity-onnx` the bench model
is exported once with `optimum-cli export onnx` in the Infinity venv into a staged copy of the
folder (links to its files plus `model.onnx`, cached under the peers dir), as a user with a
local folder would do; Infinity then applies its own ORTOptimizer pass on load.

Infinity 0.0.78 loads ONNX files from a local folder only in one layout: it globs the folder
for `*.onnx` and hands the match, as globbed, to Optimum as `file_name`, which Optimum compares
with the bare names of the folder's ONNX files. An absolute folder path, or a file in a
subfolder (`onnx/model.onnx`, the Hub layout), fails with `FileNotFoundError: Could not find
any ONNX files with target file name .../model.onnx, only found: [PosixPath('onnx/model.onnx')]`.
So the graph sits at the staged folder's top and the server runs from inside it with
`--model-id .`. For `classify` its start-up warm-up is turned off (`--no-model-warmup`): the
ONNX classifier's warm-up feeds 514 tokens to a 512-position model and the server exits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from zesty.bench import peers
from zesty.bench.servers import Target

ONNX_TASKS = {"embed": "feature-extraction", "classify": "text-classification"}


def configure(t: Target, peer, venv: Path, model_dir: Path, workload, log=None) -> None:
    """Fill in `t` to serve `model_dir` with Infinity; RuntimeError when it cannot."""
    model_id = str(model_dir)
    if "optimum" in peer.flags:
        t.cwd = str(export_onnx(venv, model_dir, ONNX_TASKS[workload.name], log))
        model_id = "."  # see the module docstring
    t.cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model_id]
    t.cmd += ["--served-model-name", "model", "--host", "127.0.0.1", "--port", "{port}"]
    t.cmd += list(peer.flags)
    if model_id == "." and workload.name == "classify":
        # its ONNX classifier's start-up warm-up sends 512 tokens plus [CLS]/[SEP] untruncated
        # and fails on a 512-position BERT ("broadcast ... 512 by 514"); requests are <= 128
        t.cmd.append("--no-model-warmup")
    t.dialect = "infinity"
    t.path = "/embeddings" if workload.name == "embed" else "/classify"
    t.ready_path = "/health"
    t.env = {"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    t.ready_timeout = 600


def export_onnx(venv: Path, model_dir: Path, task: str, log=None) -> Path:
    """A copy of `model_dir` (links) with `model.onnx` exported for `task`, cached."""

    def export(out: Path) -> None:
        out.mkdir()
        for f in model_dir.iterdir():
            if f.is_file() and f.suffix != ".onnx":
                (out / f.name).symlink_to(f.resolve())
        cmd = [str(venv / "bin" / "optimum-cli"), "export", "onnx", "--model", str(model_dir)]
        # Infinity's ONNX embedder reads `last_hidden_state` and pools itself: the transformers
        # graph, not the sentence-transformers one optimum-cli picks for a folder with
        # modules.json
        cmd += ["--task", task, "--library-name", "transformers", str(out / "export")]
        if log:
            log(f"exporting {model_dir} to ONNX ({task}) for Infinity in {out}")
        graph = out / "export" / "model.onnx"
        peers.run_converter(cmd, out.parent / f"{out.name}.log", graph, "optimum-cli export onnx")
        # the exporter also writes config and tokenizer files: only the graph is wanted
        graph.rename(out / "model.onnx")
        shutil.rmtree(out / "export")

    return peers.cached_conversion("infinity-onnx-models", model_dir, f"-{task}", export)
