"""The typed request and event objects shared by the generation modules (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence picks its tokens. `do_sample=False` is greedy (argmax)."""

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0  # HF/TGI multiplicative penalty over prompt + output
    frequency_penalty: float = 0.0  # OpenAI additive penalties over the output
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None
    stop: tuple[str, ...] = ()
    include_stop_in_output: bool = False  # TGI keeps the matched stop text, OpenAI drops it
    eos_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    top_n: int = 0  # alternatives (with logprobs) per generated token

    @property
    def needs_penalties(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.frequency_penalty != 0.0
            or self.presence_penalty != 0.0
        )


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str = ""


@dataclass
class TokenEvent:
    """One generated token. `text` is the new, UTF-8-safe text it completes (may be "")."""

    index: int  # 1-based position among generated tokens
    token_id: int
    text: str
    token_text: str  # the token's own text (for details / logprobs), may be partial UTF-8
    special: bool
    logprob: float | None = None
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (id, text, logprob)
    finish_reason: str | None = None  # set on the last event: length | eos_token | stop_sequence
    generated_text: str | None = None  # set on the last event: the whole generated text
    prompt_tokens: int = 0
    seed: int | None = None
