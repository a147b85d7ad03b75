"""A minimal TGI-compatible HTTP front for a CTranslate2 `Generator`.

CTranslate2 ships no HTTP server, so `zesty bench` runs this script with the Python of the
peer's own virtual environment (`~/.cache/zesty/peers/ctranslate2`, which has `ctranslate2`,
`transformers` for the tokenizer, `starlette` and `uvicorn`) to measure it as a generation
peer:

- one `ctranslate2.Generator` on the CPU with `inter_threads=1, intra_threads=THREADS`,
  stepped by one background thread. CTranslate2 has no continuous batching (its maintainers
  say it was not designed for it, OpenNMT/CTranslate2#1333); its way to serve many requests
  is to hand it batches. So requests that arrive while a batch runs wait, and are all given
  to the next `generate_batch` call together (static batching), which is what its docs
  point to for throughput (batch size, `max_batch_size`). Its other way, one
  `generate_tokens` call per request on `inter_threads=2, intra_threads=1`, runs only 2
  requests at once, each at batch size 1, so every other request waits for a whole
  generation, while a decode step of the whole batch costs little more than one of a single
  row (it is bound by reading the weights). With `include_prompt_in_result=False` (its advice
  for long prompts) the batch's shortest prompt is forwarded at once and the longer prompts'
  remaining tokens are fed one per decoding step, so a batch runs (longest - shortest prompt)
  + max_new_tokens steps. Tokens are streamed with `generate_batch`'s per-token `callback`
  (greedy, `beam_size=1`); a client that leaves stops its row through it;
- `POST /generate_stream` `{"inputs", "parameters": {"max_new_tokens", ...}}` → server-sent
  events as TGI sends them, one per token (`data: {"index", "token": {...},
  "generated_text": null | the whole text on the last, "details": null | {...}}`); decoding
  is greedy and stops at EOS (TGI has no `ignore_eos`) or after `max_new_tokens`;
- `GET /health`.

    python ctranslate2_server.py CT2_MODEL_DIR --tokenizer HF_MODEL_DIR --port P \
        [--compute-type float32|int8] [--threads 2] [--max-batch 64]
"""

from __future__ import annotations

import argparse
import asyncio
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


class Request:
    """One request: its prompt tokens, and how its tokens reach its stream."""

    def __init__(self, tokens: list[str], max_new: int, loop, out: asyncio.Queue) -> None:
        self.tokens, self.max_new, self.loop, self.out = tokens, max_new, loop, out
        self.generated = 0
        self.cancelled = False

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Engine:
    """The generator and the thread that runs batches of whatever requests are waiting."""

    def __init__(
        self, model_dir: str, compute_type: str, threads: int, max_batch: int, workers: int = 1
    ) -> None:
        import ctranslate2

        self.generator = ctranslate2.Generator(
            model_dir,
            device="cpu",
            compute_type=compute_type,
            inter_threads=workers,
            intra_threads=max(threads // workers, 1),
        )
        self.max_batch = max_batch
        self.incoming: queue.Queue[Request] = queue.Queue()
        run = self._run if workers == 1 else self._run_one_by_one
        for i in range(workers):
            threading.Thread(target=run, name=f"ct2-{i}", daemon=True).start()

    def submit(self, request: Request) -> None:
        self.incoming.put(request)

    def _run_one_by_one(self) -> None:
        """`--workers N`: N threads, each streams one request at a time (`generate_tokens`)."""
        while True:
            request = self.incoming.get()
            if request.cancelled:
                continue
            try:
                steps = self.generator.generate_tokens(
                    request.tokens, max_length=request.max_new, sampling_topk=1
                )
                for step in steps:
                    if request.cancelled:
                        steps.close()
                        break
                    request.put(step.token_id)
            except Exception as exc:  # noqa: BLE001 — answer the request with it
                request.put(exc)
                continue
            request.put(None)

    def _run(self) -> None:
        while True:
            batch = [self.incoming.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.incoming.get_nowait())
                except queue.Empty:
                    break
            batch = [r for r in batch if not r.cancelled]
            if batch:
                self._generate(batch)

    def _generate(self, batch: list[Request]) -> None:
        # called once per generated token of each row (`step.step` counts from the start of
        # the decoding loop, which feeds a longer prompt's extra tokens first, one a step)
        def on_step(step) -> bool:
            request = batch[step.batch_id]
            if request.cancelled:
                return True  # stop decoding this row
            request.generated += 1
            request.put(step.token_id)
            return request.generated >= request.max_new

        try:
            self.generator.generate_batch(
                [r.tokens for r in batch],
                max_length=max(r.max_new for r in batch),
                beam_size=1,
                sampling_topk=1,
                include_prompt_in_result=False,
                callback=on_step,
            )
        except Exception as exc:  # noqa: BLE001 — answer every request of the batch with it
            for r in batch:
                r.put(exc)
            return
        for r in batch:
            r.put(None)


def create_app(engine: Engine, tokenizer):
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def health(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def generate_stream(request: HttpRequest):
        body = await request.json()
        prompt = body.get("inputs")
        params = body.get("parameters") or {}
        if not isinstance(prompt, str) or not prompt:
            return JSONResponse({"error": "`inputs` must be a non-empty string"}, 422)
        max_new = int(params.get("max_new_tokens") or 20)
        tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(prompt))
        out: asyncio.Queue = asyncio.Queue()
        req = Request(tokens, max_new, asyncio.get_running_loop(), out)
        engine.submit(req)

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
                    ids.append(item)
                    full = tokenizer.decode(ids)
                    delta = "" if full.endswith("\ufffd") else full[len(text) :]
                    text += delta
                    if token is not None:
                        yield _event(index, token, None, None)
                    index += 1
                    token = (item, delta)
                if token is not None:  # the last token carries the text and details
                    reason = "length" if index >= max_new else "eos_token"
                    details = {"finish_reason": reason, "generated_tokens": index}
                    yield _event(index, token, text, details)
            finally:
                if not done:
                    req.cancelled = True

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/generate_stream", generate_stream, methods=["POST"]),
        ]
    )


def main() -> None:
    import ctranslate2
    import uvicorn
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", help="a CTranslate2 model from `ct2-transformers-converter`")
    ap.add_argument("--tokenizer", required=True, help="the Hugging Face model folder")
    ap.add_argument("--port", type=int, default=8004)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--compute-type", default="float32", help="float32, int8, int8_float32, ...")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--max-batch", type=int, default=64, help="requests in one batch at most")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="1: batch waiting requests; N: N requests at once, one generate_tokens each",
    )
    args = ap.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    engine = Engine(args.model_dir, args.compute_type, args.threads, args.max_batch, args.workers)
    print(
        f"ctranslate2 {ctranslate2.__version__}, compute_type {args.compute_type}, "
        f"CPU compute types {sorted(ctranslate2.get_supported_compute_types('cpu'))}",
        flush=True,
    )
    uvicorn.run(create_app(engine, tokenizer), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
