"""Prometheus metrics of text generation (TGI style), in the app's registry.

Per model: time to first token, inter-token latency, generated tokens, request counts by
finish reason; per engine step: sequences in the batch, tokens computed, step duration, and
the running / waiting sequences.
"""

from __future__ import annotations

import weakref

from prometheus_client import Counter, Gauge, Histogram

from zesty.http.metrics import Metrics

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096)

_BY_APP: weakref.WeakKeyDictionary[Metrics, GenerationMetrics] = weakref.WeakKeyDictionary()


class GenerationMetrics:
    def __init__(self, registry) -> None:
        r = registry
        self.ttft = Histogram(
            "zesty_generation_time_to_first_token_seconds",
            "Time from admission to the first generated token",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.itl = Histogram(
            "zesty_generation_inter_token_latency_seconds",
            "Time between two generated tokens of one sequence",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokens = Counter("zesty_generation_tokens", "Generated tokens", ["model"], registry=r)
        self.finished = Counter(
            "zesty_generation_requests",
            "Finished generations by reason",
            ["model", "finish_reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "zesty_generation_batch_size",
            "Sequences in one engine step",
            ["model"],
            buckets=_SIZES,
            registry=r,
        )
        self.step_tokens = Histogram(
            "zesty_generation_step_tokens",
            "Tokens computed in one engine step (decodes + prefill chunks)",
            ["model"],
            buckets=_TOKENS,
            registry=r,
        )
        self.step = Histogram(
            "zesty_generation_step_duration_seconds",
            "Duration of one engine step (forward + sampling)",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.running = Gauge(
            "zesty_generation_running", "Sequences in the running batch", ["model"], registry=r
        )
        self.waiting = Gauge(
            "zesty_generation_waiting", "Sequences waiting for a KV slot", ["model"], registry=r
        )

    @classmethod
    def of(cls, metrics: Metrics) -> GenerationMetrics:
        found = _BY_APP.get(metrics)
        if found is None:
            found = _BY_APP[metrics] = cls(metrics.registry)
        return found

    def step_observer(self, model: str):
        size, tokens, step = (
            self.batch_size.labels(model),
            self.step_tokens.labels(model),
            self.step.labels(model),
        )
        running, waiting = self.running.labels(model), self.waiting.labels(model)

        def observe(batch_size: int, num_tokens: int, seconds: float, run: int, wait: int) -> None:
            size.observe(batch_size)
            tokens.observe(num_tokens)
            step.observe(seconds)
            running.set(run)
            waiting.set(wait)

        return observe
