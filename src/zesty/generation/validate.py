"""From a route's parameters to a checked `GenerationRequest`: limits named in every error.

The routes' pydantic models already refuse wrong types and out-of-range numbers (strict JSON
refuses NaN/Infinity before that); here the per-server limits are applied (each 4xx names the
flag and the value given) and the dialect-free `SamplingParams` is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from zesty.errors import InvalidInput
from zesty.generation.model import GenerativeModel, Limits
from zesty.generation.types import GenerationRequest, SamplingParams


@dataclass
class Knobs:
    """What any dialect can ask for, already range-checked; None: the dialect's default."""

    max_new_tokens: int | None = None
    default_max_new_tokens: int | None = None  # None: as many as fit
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop: list[str] | None = None
    include_stop_in_output: bool = False
    logprobs: bool = False
    top_n: int = 0
    n: int = 1
    truncate: int | None = None


def check_prompt(model: GenerativeModel, limits: Limits, ids: list[int], param: str) -> list[int]:
    if not ids:
        raise InvalidInput(f"{param} must not be empty", param=param)
    if len(ids) > limits.max_input_tokens:
        raise InvalidInput(
            f"{param} has {len(ids)} tokens, more than --max-input-tokens "
            f"({limits.max_input_tokens})",
            param=param,
        )
    return ids


def build_request(
    model: GenerativeModel,
    limits: Limits,
    prompt_ids: list[int],
    knobs: Knobs,
    *,
    names: dict[str, str] | None = None,
    prompt_param: str = "inputs",
) -> GenerationRequest:
    """`names` maps knob names to the dialect's parameter names (e.g. max_tokens)."""
    names = names or {}

    def name(knob: str) -> str:
        return names.get(knob, knob)

    if knobs.truncate is not None:
        prompt_ids = prompt_ids[-knobs.truncate :]
    ids = check_prompt(model, limits, prompt_ids, prompt_param)
    if knobs.n > limits.max_n:
        raise InvalidInput(f"n ({knobs.n}) is more than --max-n ({limits.max_n})", param="n")
    stop = knobs.stop or []
    if len(stop) > limits.max_stop_sequences:
        raise InvalidInput(
            f"{name('stop')} has {len(stop)} sequences, more than --max-stop-sequences "
            f"({limits.max_stop_sequences})",
            param=name("stop"),
        )
    if knobs.top_n > limits.max_top_n_tokens:
        raise InvalidInput(
            f"{name('top_n')} ({knobs.top_n}) is more than --max-top-n-tokens "
            f"({limits.max_top_n_tokens})",
            param=name("top_n"),
        )
    room = limits.max_total_tokens - len(ids)
    new = knobs.max_new_tokens
    if new is not None and new > limits.max_new_tokens:
        raise InvalidInput(
            f"{name('max_new_tokens')} ({new}) is more than --max-new-tokens "
            f"({limits.max_new_tokens})",
            param=name("max_new_tokens"),
        )
    if new is not None and new > room:
        raise InvalidInput(
            f"{prompt_param} tokens ({len(ids)}) + {name('max_new_tokens')} ({new}) = "
            f"{len(ids) + new}, more than the {limits.max_total_tokens} total tokens allowed "
            f"({limits.total_source})",
            param=name("max_new_tokens"),
        )
    if new is None:
        new = min(room, limits.max_new_tokens)
        if knobs.default_max_new_tokens is not None:
            new = min(new, knobs.default_max_new_tokens)
    if new < 1:
        raise InvalidInput(
            f"{prompt_param} ({len(ids)} tokens) leaves no room under --max-total-tokens "
            f"({limits.max_total_tokens})",
            param=prompt_param,
        )
    temperature = knobs.temperature if knobs.temperature is not None else 1.0
    do_sample = knobs.do_sample
    if temperature == 0.0:  # OpenAI's greedy
        do_sample, temperature = False, 1.0
    bias = tuple(sorted((knobs.logit_bias or {}).items()))
    for token, _ in bias:
        if not 0 <= token < model.lm.vocab_size:
            raise InvalidInput(
                f"logit_bias: token id {token} is not in the vocabulary (0..{model.lm.vocab_size - 1})",
                param="logit_bias",
            )
    params = SamplingParams(
        max_new_tokens=new,
        do_sample=do_sample,
        temperature=temperature,
        top_k=knobs.top_k or 0,
        top_p=knobs.top_p if knobs.top_p is not None else 1.0,
        typical_p=knobs.typical_p if knobs.typical_p is not None else 1.0,
        repetition_penalty=knobs.repetition_penalty or 1.0,
        frequency_penalty=knobs.frequency_penalty or 0.0,
        presence_penalty=knobs.presence_penalty or 0.0,
        logit_bias=bias,
        seed=knobs.seed,
        stop=tuple(stop),
        include_stop_in_output=knobs.include_stop_in_output,
        eos_token_ids=model.eos_token_ids,
        logprobs=knobs.logprobs,
        top_n=knobs.top_n,
    )
    return GenerationRequest(ids, params)


def with_seed(request: GenerationRequest, index: int) -> GenerationRequest:
    """The i-th of n choices: a different (but reproducible, when seeded) draw."""
    params = request.params
    if index == 0 or params.seed is None:
        return request
    from dataclasses import replace

    return GenerationRequest(
        request.prompt_ids, replace(params, seed=(params.seed + index) % 2**64), request.request_id
    )
