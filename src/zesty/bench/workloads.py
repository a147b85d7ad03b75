"""Workloads: which model, which texts, and the request body each kind of server expects.

Texts are generated from a fixed seed out of common English words, each checked against the
model's own tokenizer to fall in the workload's token range. Every measurement point gets
sentences no other point uses, so caches help only where a workload repeats itself (the
`repeats` point, where 30% of requests repeat an earlier sentence).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this "
    "from or had by hot word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like so "
    "these her long make thing see him two has look more day could go come did number sound no "
    "most people my over know water than call first who may down side been now find any new "
    "work part take get place made live where after back little only round man year came show "
    "every good me give our under name very through just form sentence great think say help low "
    "line differ turn cause much mean before move right boy old too same tell does set three "
    "want air well also play small end put home read hand port large spell add even land here "
    "must big high such follow act why ask men change went light kind off need house picture "
    "try us again animal point mother world near build self earth father head stand own page "
    "should country found answer school grow study still learn plant cover food sun four between "
    "state keep eye never last let thought city tree cross farm hard start might story saw far "
    "sea draw left late run while press close night real life few north open seem together next "
    "white children begin got walk example ease paper group always music those both mark often "
    "letter until mile river car feet care second book carry took science eat room friend began "
    "idea fish mountain stop once base hear horse cut sure watch color face wood main enough "
    "plain girl usual young ready above ever red list though feel talk bird soon body dog family "
    "direct pose leave song measure door product black short numeral class wind question happen "
    "complete ship area half rock order fire south problem piece told knew pass since top whole "
    "king space heard best hour better true during hundred five remember step early hold west "
    "ground interest reach fast verb sing listen six table travel less morning ten simple several"
).split()


@dataclass(frozen=True)
class Workload:
    name: str
    model: str  # a name in zesty.bench.models
    kind: str  # "encode" (one JSON answer) or "generate" (SSE stream)
    task: str  # the transformers pipeline task
    tokens: tuple[int, int]  # text length range, in the model's tokens
    headline_clients: int
    description: str
    new_tokens: int = 0
    goals: dict = field(default_factory=dict)
    # client counts measured when --clients is not given; generation stops at its headline
    # count: the peers' KV caches are sized for 16 sequences, and more clients only queue
    clients: tuple[int, ...] = (1, 4, 16, 32)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "embed",
            "minilm",
            "encode",
            "feature-extraction",
            (8, 64),
            32,
            "all-MiniLM-L6-v2 sentence embeddings; distinct sentences of 8-64 tokens, "
            "and a variant with 30% repeats",
            goals={"vs_baseline_x": 6.0, "vs_best_peer_x": 1.5, "batch1_latency_x": 0.3},
        ),
        Workload(
            "classify",
            "bert-base-classifier",
            "encode",
            "text-classification",
            (16, 128),
            32,
            "BERT-base-shaped sequence classifier (random weights, 2 labels), 16-128 tokens",
        ),
        Workload(
            "generate-gpt2",
            "gpt2",
            "generate",
            "text-generation",
            (32, 256),
            16,
            "GPT-2 124M shape (random weights), prompts of 32-256 tokens, 128 new tokens, "
            "greedy, streamed",
            new_tokens=128,
            goals={"vs_baseline_x": 12.0, "vs_naive_x": 100.0, "vs_best_peer_x": 1.2},
            clients=(1, 4, 16),
        ),
        Workload(
            "generate-smollm2",
            "smollm2",
            "generate",
            "text-generation",
            (32, 256),
            16,
            "SmolLM2-135M-shaped Llama (random weights), prompts of 32-256 tokens, "
            "128 new tokens, greedy, streamed",
            new_tokens=128,
            goals={"vs_baseline_x": 12.0, "vs_naive_x": 100.0, "vs_best_peer_x": 1.2},
            clients=(1, 4, 16),
        ),
    )
}
ALIASES = {"generate": ["generate-gpt2", "generate-smollm2"]}


def expand(names: list[str]) -> list[Workload]:
    """Workload names (or aliases) to workloads; ValueError names the unknown one."""
    out: list[Workload] = []
    for name in names:
        for n in ALIASES.get(name, [name]):
            if n not in WORKLOADS:
                known = ", ".join([*WORKLOADS, *ALIASES])
                raise ValueError(f"unknown workload {name!r} (known: {known})")
            if WORKLOADS[n] not in out:
                out.append(WORKLOADS[n])
    return out


def _tokenizer(model_dir: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


class Corpus:
    """Distinct texts in a token range, drawn in order; `take(n)` never repeats one."""

    def __init__(self, model_dir: Path, tokens: tuple[int, int], seed: int = 0) -> None:
        self.tok = _tokenizer(model_dir)
        self.lo, self.hi = tokens
        self.rng = random.Random(seed)
        self.seen: set[str] = set()
        self.lengths: list[int] = []

    def _one(self) -> str:
        while True:
            target = self.rng.randint(self.lo, self.hi)
            words = [self.rng.choice(WORDS) for _ in range(max(2, int(target * 0.8)))]
            text = " ".join(words).capitalize() + self.rng.choice([".", "?", "!"])
            n = len(self.tok.encode(text).ids)
            if self.lo <= n <= self.hi and text not in self.seen:
                self.seen.add(text)
                self.lengths.append(n)
                return text

    def take(self, n: int) -> list[str]:
        return [self._one() for _ in range(n)]

    def mean_tokens(self) -> float:
        return sum(self.lengths) / max(len(self.lengths), 1)


def with_repeats(fresh: list[str], share: float, seed: int) -> list[str]:
    """A request sequence where `share` of requests repeat a sentence sent earlier in it."""
    rng = random.Random(seed)
    total = int(round(len(fresh) / (1 - share)))
    out: list[str] = []
    pool: list[str] = []
    it = iter(fresh)
    for _ in range(total):
        text = None if pool and rng.random() < share else next(it, None)
        if text is None:
            out.append(rng.choice(pool))
        else:
            pool.append(text)
            out.append(text)
    return out


def body(dialect: str, text: str, workload: Workload, model_id: str) -> dict:
    """The JSON body for one request in a server's dialect."""
    if dialect == "hf":
        return {"inputs": text}
    if dialect == "infinity":
        return {"model": model_id, "input": [text]}
    if dialect == "tgi":
        params = {"max_new_tokens": workload.new_tokens, "do_sample": False}
        return {"inputs": text, "parameters": params}
    if dialect == "openai-completions":
        return {
            "model": model_id,
            "prompt": text,
            "max_tokens": workload.new_tokens,
            "temperature": 0,
            "stream": True,
        }
    raise ValueError(dialect)


def write_bodies(path: Path, dialect: str, texts: list[str], workload: Workload, model_id: str):
    path.write_text("".join(json.dumps(body(dialect, t, workload, model_id)) + "\n" for t in texts))
    return path
