"""The compiled step: the decoder graph (`onnx_graph.py`) in ONNX Runtime, over the engine's
preallocated KV cache, bound in place.

`step(cache, items)` splits the batch the way GroupQueryAttention's CPU kernel wants it:

- every item of one token (decoding streams, and one-token prompt chunks) goes in ONE call:
  row `r` is cache slot `r` for `r` in `0..hi` (`hi` = the highest such slot + 1), so the
  past/present tensors are the prefix `cache[:hi]` of the preallocated buffer — no gather, no
  copy; each row's `seqlens_k` is its own length. Slots in that range with nothing to decode
  this step run a harmless dummy token written at their next free position (which their own
  next token overwrites before anything reads it). The scheduler hands out the lowest free
  slot, so running sequences stay packed at the front and dummies are rare.
- each prefill chunk of several tokens runs as its own call (batch 1, past = `cache[slot]`):
  the kernel accepts a multi-token chunk with past context only at batch 1. Prefill is
  compute-bound, so batching chunks across sequences would gain little.

Keys/values are written by the kernel straight into the cache (past and present are the same
memory), so a step moves the weights and each row's own cache — nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zesty.generation.kv_cache import KVCache, KVShape
from zesty.generation.runner_torch import StepInput


class OnnxCausalLM:
    backend = "onnx"

    def __init__(self, model_file: Path, meta: dict, *, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_file), options, providers=["CPUExecutionProvider"]
        )
        self.kv_shape = KVShape(meta["layers"], meta["kv_heads"], meta["head_dim"])
        self.max_positions = int(meta["max_positions"])
        self.vocab_size = int(meta["vocab_size"])
        self.device = torch.device("cpu")
        self._written: dict[int, int] = {}  # slot -> positions written by its latest sequence
        # a decode-only step's logits land here, reused step after step: a fresh [B, vocab]
        # tensor every step costs its page faults (~1 ms at B=16 for GPT-2's vocabulary)
        self._decode_out = torch.empty(0, self.vocab_size, dtype=torch.float32)

    def resume(self, lengths: dict[int, int]) -> None:
        """Taking over a cache another backend filled: positions in use per slot."""
        self._written = dict(lengths)

    def retain(self, slots: set[int]) -> None:
        """Only `slots` hold sequences now: a free slot's dummy row writes at position 0 (and
        attends over one position) instead of over its last occupant's length."""
        self._written = {s: n for s, n in self._written.items() if s in slots}

    # -- the step ----------------------------------------------------------------------------

    def step(self, cache: KVCache, items: list[StepInput]) -> torch.Tensor:
        """Run the chunks; returns fp32 logits of each item's last token: [B, vocab]. The
        tensor may be the runner's reused buffer: valid until the next `step`."""
        single = [(n, it) for n, it in enumerate(items) if len(it.tokens) == 1]
        if len(single) == len(items):  # a decode-only step: one call, rows in item order
            out = self._decode(cache, items, reuse=True)
            self._note_written(items)
            return out
        logits = torch.empty(len(items), self.vocab_size, dtype=torch.float32)
        if single:  # first: a dummy row may sit where a chunk below is about to write
            out = self._decode(cache, [it for _, it in single])
            logits[[n for n, _ in single]] = out
        for n, it in enumerate(items):
            if len(it.tokens) > 1:
                logits[n] = self._prefill(cache, it)[0]
        self._note_written(items)
        return logits

    def _note_written(self, items: list[StepInput]) -> None:
        for it in items:
            self._written[it.slot] = it.start + len(it.tokens)

    def _decode(self, cache: KVCache, items: list[StepInput], reuse: bool = False) -> torch.Tensor:
        hi = max(it.slot for it in items) + 1
        ids = np.zeros((hi, 1), dtype=np.int64)
        pos = np.zeros((hi, 1), dtype=np.int64)
        for slot in range(hi):
            written = self._written.get(slot, 0)
            pos[slot, 0] = written if written < cache.max_len else 0
        for it in items:
            ids[it.slot, 0] = it.tokens[0]
            pos[it.slot, 0] = it.start
        rows = np.array([it.slot for it in items], dtype=np.int64)
        out = None
        if reuse:
            if self._decode_out.shape[0] < len(items):
                self._decode_out = torch.empty(
                    max(len(items), cache.num_slots), self.vocab_size, dtype=torch.float32
                )
            out = self._decode_out[: len(items)]
        return self._run(cache, 0, hi, ids, pos, rows, out=out)

    def _prefill(self, cache: KVCache, item: StepInput) -> torch.Tensor:
        n = len(item.tokens)
        ids = np.asarray([item.tokens], dtype=np.int64)
        pos = np.arange(item.start, item.start + n, dtype=np.int64)[None, :]
        return self._run(cache, item.slot, 1, ids, pos, np.array([n - 1], dtype=np.int64))

    def _run(
        self, cache: KVCache, first: int, rows: int, ids, pos, logits_index, out=None
    ) -> torch.Tensor:
        """One session call over cache slots `first..first+rows-1` (a contiguous slice); the
        logits go to `out` (contiguous [len(logits_index), vocab]) or a new tensor."""
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("position_ids", pos)
        seqlens = (pos[:, -1]).astype(np.int32)  # each row's total length - 1
        io.bind_cpu_input("seqlens_k", seqlens)
        io.bind_cpu_input("total_sequence_length", np.array(int(seqlens.max()) + 1, np.int32))
        io.bind_cpu_input("logits_index", logits_index)  # rows of the flattened [B*S]
        if out is None:
            out = torch.empty(len(logits_index), self.vocab_size, dtype=torch.float32)
        io.bind_output("logits", "cpu", 0, np.float32, list(out.shape), out.data_ptr())
        shape = [rows, self.kv_shape.kv_heads, cache.max_len, self.kv_shape.head_dim]
        for layer in range(self.kv_shape.num_layers):
            for kind, tensors in (("key", cache.keys), ("value", cache.values)):
                ptr = tensors[layer][first].data_ptr()
                io.bind_input(f"past.{layer}.{kind}", "cpu", 0, np.float32, shape, ptr)
                io.bind_output(f"present.{layer}.{kind}", "cpu", 0, np.float32, shape, ptr)
        self.session.run_with_iobinding(io)
        return out

    # -- reference paths (tests, accuracy checks, decoder_input_details) ---------------------

    def full_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits for every position of one sequence, in one pass over a scratch cache: [L, V]."""
        n = len(token_ids)
        scratch = KVCache(self.kv_shape, 1, n)
        ids = np.asarray([token_ids], dtype=np.int64)
        pos = np.arange(n, dtype=np.int64)[None, :]
        return self._run(scratch, 0, 1, ids, pos, np.arange(n, dtype=np.int64))
