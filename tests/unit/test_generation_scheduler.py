"""The scheduler alone: no model, no torch (vLLM-style schedule -> step -> update)."""

from __future__ import annotations

import pytest

from zesty.generation.scheduler import Scheduler, SchedulerConfig, Status
from zesty.generation.types import SamplingParams


def sched(slots=2, max_len=32, budget=8, waiting=100) -> Scheduler:
    return Scheduler(SchedulerConfig(slots, max_len, budget, waiting))


def run_step(s: Scheduler, token: int = 7):
    out = s.schedule()
    sampled = {c.seq.seq_id: token for c in out.chunks if c.sample}
    s.update_from_output(out, sampled)
    return out


def test_prefill_then_decode_one_token_per_step():
    s = sched(budget=16)
    seq = s.add([1, 2, 3], SamplingParams(max_new_tokens=3))
    out = run_step(s)
    assert [(c.start, c.tokens, c.sample) for c in out.chunks] == [(0, [1, 2, 3], True)]
    assert seq.output_ids == [7] and seq.num_computed == 3
    out = run_step(s, 8)
    assert [(c.start, c.tokens) for c in out.chunks] == [(3, [7])]
    run_step(s, 9)
    assert seq.status is Status.FINISHED and seq.finish_reason == "length"
    assert seq.output_ids == [7, 8, 9]
    assert s.free_slots and not s.has_work


def test_chunked_prefill_keeps_decodes_going():
    s = sched(budget=4)
    a = s.add([1, 2], SamplingParams(max_new_tokens=10))
    run_step(s)  # a prefilled, sampled once
    b = s.add(list(range(10)), SamplingParams(max_new_tokens=2))
    out = run_step(s)
    # a decodes (1 token) and b's prefill gets the 3 tokens left of the budget, no sample
    assert [(c.seq.seq_id, c.start, len(c.tokens), c.sample) for c in out.chunks] == [
        (a.seq_id, 2, 1, True),
        (b.seq_id, 0, 3, False),
    ]
    assert b.output_ids == []
    out = run_step(s)
    assert [(c.seq.seq_id, c.start, len(c.tokens)) for c in out.chunks] == [
        (a.seq_id, 3, 1),
        (b.seq_id, 3, 3),
    ]
    run_step(s)
    out = run_step(s)  # b's last prompt token plus sampling
    assert out.chunks[1].seq is b and out.chunks[1].sample and b.output_ids == [7]
    assert all(out.num_tokens <= 4 for out in [out])


def test_admission_by_slots_and_release_on_finish():
    s = sched(slots=1, budget=16)
    a = s.add([1], SamplingParams(max_new_tokens=1))
    b = s.add([2], SamplingParams(max_new_tokens=1))
    out = run_step(s)
    assert [c.seq for c in out.chunks] == [a]  # one slot: b waits
    assert a.status is Status.FINISHED and b.status is Status.WAITING
    out = run_step(s)  # a's slot was freed at once: b runs in the very next step
    assert [c.seq for c in out.chunks] == [b] and b.slot == a.slot


def test_abort_frees_slot_and_drops_inflight_result():
    s = sched(slots=1, budget=16)
    a = s.add([1, 2], SamplingParams(max_new_tokens=5))
    b = s.add([3], SamplingParams(max_new_tokens=5))
    out = s.schedule()
    s.abort(a.seq_id)  # the client went away while the step was running
    assert s.update_from_output(out, {a.seq_id: 5}) == []
    assert a.output_ids == [] and a.finish_reason == "cancelled"
    out = s.schedule()
    assert [c.seq for c in out.chunks] == [b]


def test_abort_waiting_sequence():
    s = sched(slots=1)
    a = s.add([1], SamplingParams(max_new_tokens=2))
    b = s.add([2], SamplingParams(max_new_tokens=2))
    s.abort(b.seq_id)
    assert list(s.waiting) == [a] and b.status is Status.FINISHED


def test_refuses_what_can_never_fit_and_full_queue():
    s = sched(max_len=8, waiting=1)
    assert not s.can_fit(5, 4) and s.can_fit(4, 4)
    with pytest.raises(ValueError):
        s.add([1] * 5, SamplingParams(max_new_tokens=4))
    s.add([1], SamplingParams(max_new_tokens=2))
    with pytest.raises(OverflowError):
        s.add([1], SamplingParams(max_new_tokens=2))


def test_length_limit_by_slot_positions():
    s = sched(max_len=4, budget=16)
    seq = s.add([1, 2], SamplingParams(max_new_tokens=2))
    run_step(s)
    run_step(s)
    assert seq.finish_reason == "length" and seq.num_tokens == 4


def test_finish_from_outside_eos():
    s = sched()
    seq = s.add([1], SamplingParams(max_new_tokens=10))
    run_step(s)
    s.finish(seq.seq_id, "eos_token")
    assert seq.finish_reason == "eos_token" and len(s.free_slots) == 2


def test_budget_bounds_every_step_and_decodes_first():
    s = sched(slots=4, budget=5)
    seqs = [s.add([1] * 6, SamplingParams(max_new_tokens=3)) for _ in range(4)]
    while s.has_work:
        out = run_step(s)
        assert 0 < out.num_tokens <= 5
        decodes = [c for c in out.chunks if c.start >= 6]
        assert out.chunks[: len(decodes)] == decodes  # decodes lead the step
    assert all(q.output_ids == [7, 7, 7] for q in seqs)
