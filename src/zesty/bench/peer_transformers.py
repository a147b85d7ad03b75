"""The transformers continuous-batching peer: `transformers serve --continuous-batching`.

transformers 5 ships its own OpenAI-compatible server (`transformers serve`, from the
`transformers[serving]` extra) built on its `ContinuousBatchingManager` (paged attention, the
batch re-scheduled every step). Its users run it as a command, so the peer does too, pinned to
the bench model (`force_model`, so requests must name that same path) on the CPU, with torch
at 2 threads, and is measured on `/v1/completions` with `stream: true`.

Its stream has one event per decoded text piece (a token whose bytes do not yet decode alone
is sent with the next one) plus a last event with `finish_reason` and `usage`, and no
`[DONE]`; the loadgen counts events, so its token count can differ from the true one by about
one per request.
"""

from __future__ import annotations

from pathlib import Path

from zesty.bench.servers import Target


def configure(t: Target, peer, venv: Path, model_dir: Path, workload, log=None) -> None:
    """Fill in `t` to serve `model_dir` with `transformers serve --continuous-batching`."""
    t.cmd = [str(venv / "bin" / "transformers"), "serve", str(model_dir)]
    t.cmd += ["--continuous-batching", "--device", "cpu", "--dtype", "float32"]
    t.cmd += ["--host", "127.0.0.1", "--port", "{port}", *peer.flags]
    t.dialect = "openai-completions"
    t.path = "/v1/completions"
    t.model_id = str(model_dir)  # the server refuses any other model name
    t.ready_path = "/health"
    t.env = {"OMP_NUM_THREADS": "2", "HF_HUB_DISABLE_TELEMETRY": "1"}
    t.ready_timeout = 600
