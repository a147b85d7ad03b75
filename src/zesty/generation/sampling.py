"""Picking the next token for every sequence of a step at once (vectorized over the batch).

Order, as transformers applies it: logit bias -> repetition penalty (over prompt + output,
HF/TGI's multiplicative rule) -> frequency/presence penalties (OpenAI's additive rule, over
the output) -> [logprobs are taken here] -> greedy argmax, or temperature -> top-k -> top-p ->
typical-p -> a draw.

Reproducible seeds: each sequence owns a `torch.Generator`; a draw uses the exponential-race
trick (argmax of p / E with E ~ Exp(1) drawn from that generator, a vocabulary's worth per
step), so a sequence's draws depend only on its own seed and step, never on which other
sequences share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zesty.generation.types import SamplingParams


@dataclass
class SampleRow:
    params: SamplingParams
    token_ids: list[int]  # prompt + output so far (repetition penalty)
    num_prompt: int
    generator: torch.Generator | None  # None for greedy rows


@dataclass
class SampleResult:
    token_ids: list[int]
    logprobs: list[float] | None  # chosen tokens' logprobs, when any row asked
    top: list[list[tuple[int, float]]]  # per row: the top-n (id, logprob); [] when not asked


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _column(rows: list[SampleRow], name: str, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([getattr(r.params, name) for r in rows], dtype=dtype)


def apply_penalties(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    """Logit bias and the three penalties; returns a new tensor (rows without any: untouched),
    or `logits` itself when no row has any (the common case: no [B, vocab] copy)."""
    if not any(r.params.logit_bias or r.params.needs_penalties for r in rows):
        return logits
    logits = logits.clone()
    vocab = logits.shape[1]
    for i, row in enumerate(rows):
        for token, bias in row.params.logit_bias:
            if 0 <= token < vocab:
                logits[i, token] += bias
    picked = [i for i, r in enumerate(rows) if r.params.needs_penalties]
    if not picked:
        return logits
    width = max(len(rows[i].token_ids) for i in picked)
    ids = torch.zeros(len(picked), max(width, 1), dtype=torch.long)
    is_output = torch.zeros_like(ids, dtype=torch.float32)
    present = torch.zeros_like(ids, dtype=torch.bool)
    for j, i in enumerate(picked):
        tokens = rows[i].token_ids
        ids[j, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        present[j, : len(tokens)] = True
        is_output[j, rows[i].num_prompt : len(tokens)] = 1.0
    sub = logits[picked]
    # repetition penalty over every token seen (prompt + output)
    seen = torch.zeros_like(sub, dtype=torch.bool).scatter_(1, ids, present)
    rep = _column([rows[i] for i in picked], "repetition_penalty")[:, None]
    penalized = torch.where(sub < 0, sub * rep, sub / rep)
    sub = torch.where(seen, penalized, sub)
    # frequency / presence over the output only
    counts = torch.zeros_like(sub).scatter_add_(1, ids, is_output)
    freq = _column([rows[i] for i in picked], "frequency_penalty")[:, None]
    pres = _column([rows[i] for i in picked], "presence_penalty")[:, None]
    sub = sub - freq * counts - pres * (counts > 0).float()
    logits[picked] = sub
    return logits


def warp(logits: torch.Tensor, rows: list[SampleRow]) -> torch.Tensor:
    """Temperature, top-k, top-p and typical-p for sampled rows (-inf where filtered)."""
    temperature = _column(rows, "temperature")[:, None]
    logits = logits / temperature
    neg_inf = torch.finfo(logits.dtype).min
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[1]
    ranks = torch.arange(vocab)[None, :]
    top_k = torch.tensor([r.params.top_k or vocab for r in rows])[:, None]
    remove = ranks >= top_k
    # top-p: drop tokens once the mass before them already reaches top_p (keep >= 1)
    probs = sorted_logits.masked_fill(remove, neg_inf).softmax(-1)
    before = probs.cumsum(-1) - probs
    top_p = _column(rows, "top_p")[:, None]
    remove |= (before >= top_p) & (ranks > 0) & (top_p < 1.0)  # 1.0: off (float cumsum)
    filtered = sorted_logits.masked_fill(remove, neg_inf)
    typical = _column(rows, "typical_p")[:, None]
    if bool((typical < 1.0).any()):
        filtered = _typical(filtered, typical)
    out = torch.full_like(logits, neg_inf)
    return out.scatter(1, order, filtered)


def _typical(sorted_logits: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    """transformers' TypicalLogitsWarper on rows with `mass` < 1 (others unchanged)."""
    neg_inf = torch.finfo(sorted_logits.dtype).min
    logp = sorted_logits.log_softmax(-1)
    p = logp.exp()
    entropy = -(torch.nan_to_num(logp * p)).sum(-1, keepdim=True)
    shifted = (-logp - entropy).abs()
    shifted_sorted, order = shifted.sort(dim=-1)
    cum = sorted_logits.gather(-1, order).softmax(-1).cumsum(-1)
    last = (cum < mass).sum(dim=1).clamp(max=sorted_logits.shape[1] - 1)
    cutoff = shifted_sorted.gather(1, last[:, None])
    remove = (shifted > cutoff) & (mass < 1.0)
    return sorted_logits.masked_fill(remove, neg_inf)


def sample(logits: torch.Tensor, rows: list[SampleRow]) -> SampleResult:
    """Next token per row of `logits` [B, V] (fp32)."""
    logits = apply_penalties(logits.float(), rows)
    want_logprobs = any(r.params.logprobs or r.params.top_n for r in rows)
    # log p = logit - logsumexp(row), taken only where asked: no [B, vocab] log_softmax
    # tensor (allocating and faulting in ~3 MB a step costs more than the math here)
    lse = logits.logsumexp(-1, keepdim=True) if want_logprobs else None
    chosen = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if r.params.do_sample]
    if sampled:
        warped = warp(logits[sampled], [rows[i] for i in sampled])
        probs = warped.softmax(-1)
        noise = torch.stack([_exponential(rows[i].generator, probs.shape[1]) for i in sampled])
        chosen[sampled] = (probs / noise).argmax(-1)
    token_ids = chosen.tolist()
    top: list[list[tuple[int, float]]] = [[] for _ in rows]
    chosen_lp = None
    if lse is not None:
        chosen_lp = (logits.gather(1, chosen[:, None]) - lse)[:, 0].tolist()
        n = max(r.params.top_n for r in rows)
        if n:
            values, indices = logits.topk(n, dim=-1)
            values = values - lse
            for i, r in enumerate(rows):
                k = r.params.top_n
                top[i] = list(zip(indices[i, :k].tolist(), values[i, :k].tolist()))
    return SampleResult(token_ids, chosen_lp, top)


def _exponential(generator: torch.Generator | None, size: int) -> torch.Tensor:
    return torch.empty(size).exponential_(generator=generator)
