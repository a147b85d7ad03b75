"""The CTranslate2 generation peers: convert the bench model, build the server command.

CTranslate2 has no HTTP server: its peers run `benchmarks/peers/ctranslate2_server.py` (a
TGI-compatible front for a `ctranslate2.Generator`) with the peer venv's Python, on the bench
model converted with `ct2-transformers-converter` in that venv (float32 weights, cached under
the peers dir; the int8 peer quantizes them when it loads them, `compute_type=int8`).
"""

from __future__ import annotations

from pathlib import Path

from zesty.bench import peers
from zesty.bench.servers import Target

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "peers" / "ctranslate2_server.py"


def configure(t: Target, peer, venv: Path, model_dir: Path, workload, log=None) -> None:
    """Fill in `t` to serve `model_dir` with CTranslate2; RuntimeError when it cannot."""
    if not SCRIPT.exists():
        raise RuntimeError(f"{SCRIPT} not found (run from a checkout)")
    converted = convert(venv, model_dir, log)
    t.cmd = [str(venv / "bin" / "python"), str(SCRIPT), str(converted)]
    t.cmd += ["--tokenizer", str(model_dir), "--port", "{port}", "--threads", "2"]
    t.cmd += ["--compute-type", peer.flags[0]]
    t.dialect = "tgi"
    t.path = "/generate_stream"
    t.ready_path = "/health"
    t.ready_timeout = 600


def convert(venv: Path, model_dir: Path, log=None) -> Path:
    """`model_dir` as a CTranslate2 model (float32 weights), cached under the peers dir."""

    def export(out: Path) -> None:  # the converter creates `out` (and refuses an existing one)
        cmd = [str(venv / "bin" / "ct2-transformers-converter"), "--model", str(model_dir)]
        cmd += ["--output_dir", str(out)]
        if log:
            log(f"converting {model_dir} to CTranslate2 in {out}")
        convert_log = out.parent / f"{out.name}.log"
        peers.run_converter(cmd, convert_log, out / "model.bin", "ct2-transformers-converter")

    return peers.cached_conversion("ctranslate2-models", model_dir, "", export)
