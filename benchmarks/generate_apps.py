"""Generation baselines: a plain FastAPI app around a `transformers` text-generation pipeline.

What a competent first deployment of a causal LM looks like: one `pipeline("text-generation")`
(fp32, eager PyTorch, torch's default threads) loaded at startup; requests run one at a time
on a single worker thread (the pipeline and `generate()` are not thread-safe), so concurrent
clients queue; TGI-compatible routes so the same clients can drive it:

- `POST /generate` `{"inputs", "parameters": {"max_new_tokens", "do_sample", "temperature",
  "top_k", "top_p", "repetition_penalty", "seed"}}` → `{"generated_text", "details":
  {"finish_reason", "generated_tokens"}}` (through the pipeline itself);
- `POST /generate_stream` → server-sent events as TGI sends them, one per token: `data:
  {"index", "token": {"id", "text", "logprob": null, "special"}, "generated_text": null |
  the whole text on the last, "details": null | {...} on the last}` — `model.generate()`
  with a `TextIteratorStreamer` subclass that hands over every token (the stock one
  flushes whole words, which would hide the inter-token latency);
- `GET /health`.

`--no-cache` is the naive path: `use_cache=False`, so every new token recomputes the whole
context (quadratic in the length).

    python benchmarks/generate_apps.py MODEL_DIR --port P [--no-cache] [--threads N]

Other tools (benchmarks/serve_generate.py, `zesty bench`) start it with exactly this command
line and wait for `GET /health`; keep it stable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field


class Parameters(BaseModel):
    model_config = ConfigDict(extra="ignore")  # TGI's other knobs (details, stop, ...)
    max_new_tokens: int = Field(20, ge=1, le=4096)
    do_sample: bool = False
    temperature: float | None = Field(None, gt=0)
    top_k: int | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    seed: int | None = None


class GenerateRequest(BaseModel):
    inputs: str = Field(..., min_length=1)
    parameters: Parameters = Field(default_factory=Parameters)


def _generate_kwargs(p: Parameters, use_cache: bool, eos: int | None) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "max_new_tokens": p.max_new_tokens,
        "do_sample": p.do_sample,
        "use_cache": use_cache,
        "pad_token_id": eos,
    }
    for name in ("temperature", "top_k", "top_p", "repetition_penalty"):
        value = getattr(p, name)
        if value is not None:
            kw[name] = value
            kw["do_sample"] = kw["do_sample"] or name != "repetition_penalty"
    return kw


def create_app(model_dir: str, use_cache: bool) -> FastAPI:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, pipeline

    pipe = pipeline("text-generation", model=model_dir, dtype=torch.float32, device="cpu")
    model, tokenizer = pipe.model, pipe.tokenizer
    model.eval()
    eos = tokenizer.eos_token_id
    special = set(tokenizer.all_special_ids)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
    app = FastAPI()

    class TokenStreamer(TextIteratorStreamer):
        """Every new token as (id, the text it completes), into an asyncio queue."""

        def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
            super().__init__(tokenizer, skip_prompt=True)
            self.loop, self.queue = loop, queue
            self.ids: list[int] = []
            self.text = ""

        def put(self, value) -> None:
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            for token in value.reshape(-1).tolist():
                self.ids.append(token)
                text = tokenizer.decode(self.ids, skip_special_tokens=True)
                delta = "" if text.endswith("\ufffd") else text[len(self.text) :]
                self.text += delta
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (token, delta))

        def end(self) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

    class Cancelled(StoppingCriteria):
        def __init__(self, flag: threading.Event) -> None:
            self.flag = flag

        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return self.flag.is_set()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/generate")
    async def generate(request: GenerateRequest) -> dict:
        p = request.parameters

        def run() -> list[int]:
            if p.seed is not None:
                torch.manual_seed(p.seed)
            out = pipe(
                request.inputs,
                return_tensors=True,
                **_generate_kwargs(p, use_cache, eos),
            )
            return list(out[0]["generated_token_ids"])

        ids = await asyncio.get_running_loop().run_in_executor(worker, run)
        prompt_len = len(tokenizer(request.inputs)["input_ids"])
        new = ids[prompt_len:]
        finish = "eos_token" if new and new[-1] == eos else "length"
        return {
            "generated_text": tokenizer.decode(new, skip_special_tokens=True),
            "details": {"finish_reason": finish, "generated_tokens": len(new)},
        }

    @app.post("/generate_stream")
    async def generate_stream(request: GenerateRequest) -> StreamingResponse:
        p = request.parameters
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        streamer = TokenStreamer(loop, queue)
        cancel = threading.Event()

        def run() -> None:
            try:
                if p.seed is not None:
                    torch.manual_seed(p.seed)
                if cancel.is_set():  # the client left while queued
                    return
                ids = tokenizer(request.inputs, return_tensors="pt")
                with torch.inference_mode():
                    model.generate(
                        **ids,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([Cancelled(cancel)]),
                        **_generate_kwargs(p, use_cache, eos),
                    )
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        future = loop.run_in_executor(worker, run)

        async def events():
            index, text, token = 0, "", None
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    if token is not None:
                        yield _event(index, token, None, None)
                    index += 1
                    token = (item[0], item[1], item[0] in special)
                    text += item[1]
                if token is not None:  # the last token carries the text and details
                    finish = "eos_token" if token[0] == eos else "length"
                    details = {"finish_reason": finish, "generated_tokens": index}
                    yield _event(index, token, text, details)
                await future
            finally:
                cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _event(index: int, token: tuple, text: str | None, details: dict | None) -> bytes:
    payload = {
        "index": index,
        "token": {"id": token[0], "text": token[1], "logprob": None, "special": token[2]},
        "top_tokens": [],
        "generated_text": text,
        "details": details,
    }
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def main() -> None:
    import torch
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", help="a causal LM folder (config, safetensors, tokenizer)")
    ap.add_argument("--port", type=int, default=8002)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--no-cache", action="store_true", help="recompute the context every token")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app = create_app(args.model_dir, use_cache=not args.no_cache)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
