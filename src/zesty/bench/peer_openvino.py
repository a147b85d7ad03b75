"""The OpenVINO GenAI generation peers: its continuous-batching pipeline behind a TGI front.

OpenVINO GenAI has no HTTP server of its own: its peers run
`benchmarks/peers/openvino_genai_server.py` (a TGI-compatible `/generate_stream` front for a
`ContinuousBatchingPipeline`) with the peer venv's Python, on the bench model converted to
OpenVINO IR with `optimum-cli export openvino` in that venv (cached under the peers dir).
`peer.flags` is the IR's weight format, then the server's own flags.
"""

from __future__ import annotations

from pathlib import Path

from zesty.bench import peers
from zesty.bench.servers import Target

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "peers" / "openvino_genai_server.py"


def configure(t: Target, peer, venv: Path, model_dir: Path, workload, log=None) -> None:
    """Fill in `t` to serve `model_dir` with OpenVINO GenAI; RuntimeError when it cannot."""
    if not SCRIPT.exists():
        raise RuntimeError(f"{SCRIPT} not found (run from a checkout)")
    ir = convert(venv, model_dir, peer.flags[0], log)
    t.cmd = [str(venv / "bin" / "python"), str(SCRIPT), str(ir), "--port", "{port}"]
    t.cmd += ["--threads", "2", *peer.flags[1:]]
    t.dialect = "tgi"
    t.path = "/generate_stream"
    t.ready_path = "/health"
    t.ready_timeout = 600


def convert(venv: Path, model_dir: Path, weight_format: str, log=None) -> Path:
    """`model_dir` as OpenVINO IR (`optimum-cli export openvino`), cached under the peers dir."""

    def export(out: Path) -> None:
        cmd = [str(venv / "bin" / "optimum-cli"), "export", "openvino", "--model", str(model_dir)]
        cmd += ["--task", "text-generation-with-past", "--weight-format", weight_format, str(out)]
        if log:
            log(f"converting {model_dir} to OpenVINO IR ({weight_format}) in {out}")
        convert_log = out.parent / f"{out.name}.log"
        peers.run_converter(cmd, convert_log, out / "openvino_model.xml", "optimum-cli export")

    return peers.cached_conversion("openvino-genai-models", model_dir, f"-{weight_format}", export)
