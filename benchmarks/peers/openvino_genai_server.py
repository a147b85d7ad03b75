"""A minimal TGI-compatible HTTP front for OpenVINO GenAI's continuous-batching pipeline.

OpenVINO GenAI ships no HTTP server, so `zesty bench` runs this script with the Python of
the peer's own virtual environment (`~/.cache/zesty/peers/openvino-genai`, which has
`openvino-genai`, `starlette` and `uvicorn`) to measure it as a generation peer:

- one `openvino_genai.ContinuousBatchingPipeline` (CPU, OpenVINO's defaults except the
  thread count and the KV-cache size) is stepped by a single background thread; every
  request is `add_request`ed to it as it arrives, so requests from concurrent clients are
  batched by the pipeline's own scheduler;
- `POST /generate_stream` `{"inputs", "parameters": {"max_new_tokens", ...}}` → server-sent
  events as TGI sends them, one per token (`data: {"index", "token": {...},
  "generated_text": null | the whole text on the last, "details": null | {...}}`); decoding
  is greedy and ignores EOS (`ignore_eos`), so every request generates `max_new_tokens`;
- `GET /health`.

    python openvino_genai_server.py OV_MODEL_DIR --port P [--threads 2] [--cache-gb 2] [--precision f32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import queue
import threading


def _event(index: int, token: tuple, text: str | None, details: dict | None) -> bytes:
    payload = {
        "index": index,
        "token": {"id": token[0], "text": token[1], "logprob": None, "special": False},
        "top_tokens": [],
        "generated_text": text,
        "details": details,
    }
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class Engine:
    """The pipeline and the thread that steps it; `submit` returns an asyncio queue of ids."""

    def __init__(
        self, model_dir: str, threads: int, cache_gb: int, max_seqs: int, precision: str
    ) -> None:
        import openvino_genai as ov_genai

        self.ov_genai = ov_genai
        config = ov_genai.SchedulerConfig()
        config.cache_size = cache_gb
        config.max_num_seqs = max_seqs
        props: dict = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        if precision != "default":
            props["INFERENCE_PRECISION_HINT"] = precision
        self.pipe = ov_genai.ContinuousBatchingPipeline(model_dir, config, "CPU", props)
        self.tokenizer = self.pipe.get_tokenizer()
        self.incoming: queue.Queue = queue.Queue()
        self.ids = itertools.count()
        self.live: dict[int, tuple] = {}  # request id -> (handle, loop, asyncio queue)
        threading.Thread(target=self._run, name="ov-step", daemon=True).start()

    def submit(self, prompt: str, max_new_tokens: int, loop, out: asyncio.Queue) -> int:
        cfg = self.ov_genai.GenerationConfig()
        cfg.max_new_tokens = max_new_tokens
        cfg.do_sample = False
        cfg.ignore_eos = True
        rid = next(self.ids)
        self.incoming.put((rid, prompt, cfg, loop, out))
        return rid

    def cancel(self, rid: int) -> None:
        self.incoming.put((rid, None, None, None, None))

    def _run(self) -> None:
        while True:
            block = not self.live
            try:
                while True:
                    rid, prompt, cfg, loop, out = self.incoming.get(block=block)
                    block = False
                    if prompt is None:  # the client left
                        entry = self.live.pop(rid, None)
                        if entry:
                            entry[0].stop()
                        continue
                    try:
                        handle = self.pipe.add_request(rid, prompt, cfg)
                    except Exception as exc:  # noqa: BLE001 — answer the request with it
                        loop.call_soon_threadsafe(out.put_nowait, exc)
                        continue
                    self.live[rid] = (handle, loop, out)
            except queue.Empty:
                pass
            if not self.live:
                continue
            try:
                self.pipe.step()
            except Exception as exc:  # noqa: BLE001 — fail every request in flight
                for _, loop, out in self.live.values():
                    loop.call_soon_threadsafe(out.put_nowait, exc)
                self.live.clear()
                continue
            batches: dict = {}  # loop -> [(asyncio queue, item)]
            for rid, (handle, loop, out) in list(self.live.items()):
                new: list[int] = []
                while handle.can_read():
                    for output in handle.read().values():
                        new.extend(output.generated_ids)
                if new:
                    batches.setdefault(loop, []).append((out, new))
                status = handle.get_status()
                if status != self.ov_genai.GenerationStatus.RUNNING:
                    batches.setdefault(loop, []).append((out, None))
                    del self.live[rid]
            for loop, items in batches.items():
                self._deliver(loop, items)

    @staticmethod
    def _deliver(loop, items: list) -> None:
        """Hand this step's tokens to the event loop and wait until its streams have sent them.

        `step()` holds the GIL while it runs, so without this the event loop only gets the
        interpreter in short slices between steps and the streams go out in bursts (which
        would show up as near-zero inter-token latency and late first tokens).
        """
        sent = threading.Event()

        def put() -> None:
            for out, item in items:
                out.put_nowait(item)
            # the woken streams run in the next iteration; set `sent` in the one after it
            loop.call_soon(loop.call_soon, sent.set)

        loop.call_soon_threadsafe(put)
        sent.wait(timeout=0.1)


def create_app(engine: Engine):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    tokenizer = engine.tokenizer

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def generate_stream(request: Request):
        body = await request.json()
        prompt = body.get("inputs")
        params = body.get("parameters") or {}
        if not isinstance(prompt, str) or not prompt:
            return JSONResponse({"error": "`inputs` must be a non-empty string"}, 422)
        max_new = int(params.get("max_new_tokens") or 20)
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        rid = engine.submit(prompt, max_new, loop, out)

        async def events():
            ids: list[int] = []
            text, index, token, done = "", 0, None, False
            try:
                while True:
                    item = await out.get()
                    if item is None:
                        done = True
                        break
                    if isinstance(item, Exception):
                        raise item
                    for tid in item:
                        ids.append(tid)
                        full = tokenizer.decode(ids)
                        delta = "" if full.endswith("\ufffd") else full[len(text) :]
                        text += delta
                        if token is not None:
                            yield _event(index, token, None, None)
                        index += 1
                        token = (tid, delta)
                if token is not None:  # the last token carries the text and details
                    details = {"finish_reason": "length", "generated_tokens": index}
                    yield _event(index, token, text, details)
            finally:
                if not done:
                    engine.cancel(rid)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/generate_stream", generate_stream, methods=["POST"]),
        ]
    )


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", help="an OpenVINO IR folder from `optimum-cli export openvino`")
    ap.add_argument("--port", type=int, default=8003)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--threads", type=int, default=2, help="inference threads (0: OpenVINO's)")
    ap.add_argument("--cache-gb", type=int, default=2, help="KV-cache size in GB")
    ap.add_argument("--max-seqs", type=int, default=256, help="sequences scheduled at once")
    ap.add_argument(
        "--precision", default="default", help="INFERENCE_PRECISION_HINT (f32, bf16) or default"
    )
    args = ap.parse_args()
    engine = Engine(args.model_dir, args.threads, args.cache_gb, args.max_seqs, args.precision)
    import openvino as ov

    core = ov.Core()
    hint = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    print(
        f"openvino {ov.__version__}, CPU inference precision default {hint}, "
        f"--precision {args.precision}",
        flush=True,
    )
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
