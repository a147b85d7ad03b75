"""The PyTorch reference step for decoder-only models (fp32), against the preallocated cache.

One `step()` runs a batch of sequences that sit at different positions — some decoding one
token, some prefilling a chunk of their prompt — in a single forward pass:

- the chunks are padded to the longest one (`[B, L]`), each row with its own position ids;
- each layer computes the new keys/values, writes only the valid rows into the cache in
  place (`KVCache.write`), and attends each row's queries over a view of its own slot
  (`keys[slot, :, :length]`, no copy), causal within a prefill chunk;
- only the last valid token of each row goes through the LM head.

The decoder layers are driven here, using the transformers modules' own weights and
submodules (projections, norms, MLPs, rotary embedding), so the math is transformers' and the
cache/mask plumbing is ours — independent of transformers' Cache API, which changes between
releases. One adapter per family: GPT-2, and the Llama family (Llama, Mistral, Qwen2, Qwen3:
rotary, RMSNorm, grouped-query attention, tied or untied embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from zesty.errors import ModelLoadError
from zesty.generation.kv_cache import KVCache, KVShape

GPT2_ARCHITECTURES = ("GPT2LMHeadModel",)
LLAMA_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)
SUPPORTED_ARCHITECTURES = GPT2_ARCHITECTURES + LLAMA_ARCHITECTURES


@dataclass
class StepInput:
    """One sequence's part of a step: `tokens` at positions `start..`, in cache `slot`."""

    slot: int
    start: int
    tokens: list[int]


class _Batch:
    """Padded ids and positions of one step, and each row's view of the cache (built once,
    shared by the layers)."""

    def __init__(self, items: list[StepInput], device: torch.device) -> None:
        lengths = torch.tensor([len(i.tokens) for i in items])
        starts = torch.tensor([i.start for i in items])
        width = int(lengths.max())
        self.ids = torch.zeros(len(items), width, dtype=torch.long, device=device)
        for row, item in enumerate(items):
            self.ids[row, : len(item.tokens)] = torch.tensor(item.tokens)
        offsets = torch.arange(width)
        valid = offsets[None, :] < lengths[:, None]  # [B, L]
        # padded rows sit at their sequence's first position (never past the model's range)
        positions = torch.where(valid, starts[:, None] + offsets[None, :], starts[:, None])
        self.rows, self.cols = valid.nonzero(as_tuple=True)  # the tokens whose K/V are stored
        slots = torch.tensor([i.slot for i in items])
        self.write_slots = slots[self.rows].to(device)
        self.write_positions = positions[self.rows, self.cols].to(device)
        self.last = lengths - 1
        self.positions = positions.to(device)
        # per row: (slot, tokens, cache length, causal mask within the chunk or None)
        self.views: list[tuple[int, int, int, torch.Tensor | None]] = []
        for item in items:
            n, total = len(item.tokens), item.start + len(item.tokens)
            mask = None
            if n > 1:
                keys = torch.arange(total, device=device)
                queries = torch.arange(item.start, total, device=device)
                mask = keys[None, :] <= queries[:, None]  # [n, total]
            self.views.append((item.slot, n, total, mask))


class TorchCausalLM:
    backend = "torch"
    sliding_window_cap = False  # max_positions is the model's sliding window (set below)

    def __init__(self, path: Path, *, allow_pickle: bool = False) -> None:

        from zesty.runtime.torch_runner import load_pretrained

        model = load_pretrained(
            "AutoModelForCausalLM", path, allow_pickle=allow_pickle, what="causal language"
        )
        self.model = model
        self.config = model.config
        arch = type(model).__name__
        if arch in GPT2_ARCHITECTURES:
            self.family = "gpt2"
            heads = self.config.n_head
            self.kv_shape = KVShape(self.config.n_layer, heads, self.config.n_embd // heads)
            self.max_positions = self.config.n_positions
            if getattr(self.config, "scale_attn_by_inverse_layer_idx", False):
                raise ModelLoadError("GPT-2 with scale_attn_by_inverse_layer_idx is not supported")
        elif arch in LLAMA_ARCHITECTURES:
            self.family = "llama"
            c = self.config
            head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
            self.kv_shape = KVShape(c.num_hidden_layers, c.num_key_value_heads, head_dim)
            self.max_positions = c.max_position_embeddings
            window = getattr(c, "sliding_window", None)
            if window and getattr(c, "use_sliding_window", True) and window < self.max_positions:
                self.max_positions = window  # no sliding-window attention here: stay inside it
                self.sliding_window_cap = True
        else:
            raise ModelLoadError(
                f"{arch} is not supported for text generation yet; supported: "
                + ", ".join(SUPPORTED_ARCHITECTURES)
            )
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.device = next(model.parameters()).device

    # -- the step ----------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self, cache: KVCache, items: list[StepInput]) -> torch.Tensor:
        """Run the chunks; returns fp32 logits of each item's last token: [B, vocab]."""
        batch = _Batch(items, self.device)
        if self.family == "gpt2":
            hidden = self._gpt2(cache, batch)
        else:
            hidden = self._llama(cache, batch)
        last = hidden[torch.arange(len(items)), batch.last]
        return self.model.get_output_embeddings()(last).float()

    def _attend(self, cache: KVCache, layer: int, batch: _Batch, q, k, v, scale: float):
        """Store k/v rows in the cache, then attend each row's queries over its own slot.

        q/k/v: [B, heads, L, dim]. The cache is read through views of each sequence's slot
        (`keys[slot, :, :length]`), never gathered into a copy of the batch's cache.
        """
        cache.write(
            layer,
            batch.write_slots,
            batch.write_positions,
            k[batch.rows, :, batch.cols],
            v[batch.rows, :, batch.cols],
        )
        out = torch.zeros_like(q)
        gqa = q.shape[1] != cache.shape.kv_heads
        for row, (slot, n, total, mask) in enumerate(batch.views):
            keys, values = cache.view(layer, slot, total)
            out[row, :, :n] = F.scaled_dot_product_attention(
                q[row : row + 1, :, :n],
                keys,
                values,
                attn_mask=mask,
                scale=scale,
                enable_gqa=gqa,
            )[0]
        bsz, heads, length, dim = out.shape
        return out.transpose(1, 2).reshape(bsz, length, heads * dim)

    def _gpt2(self, cache: KVCache, batch: _Batch) -> torch.Tensor:
        tr = self.model.transformer
        x = tr.wte(batch.ids) + tr.wpe(batch.positions)
        dim = self.kv_shape.head_dim
        scale = dim**-0.5 if self.config.scale_attn_weights else 1.0
        for i, block in enumerate(tr.h):
            h = block.ln_1(x)
            q, k, v = block.attn.c_attn(h).split(self.config.n_embd, dim=2)
            bsz, length = h.shape[:2]
            q, k, v = (t.view(bsz, length, -1, dim).transpose(1, 2) for t in (q, k, v))
            x = x + block.attn.c_proj(self._attend(cache, i, batch, q, k, v, scale))
            x = x + block.mlp(block.ln_2(x))
        return tr.ln_f(x)

    def _llama(self, cache: KVCache, batch: _Batch) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        base = self.model.model
        x = base.embed_tokens(batch.ids)
        cos, sin = base.rotary_emb(x, batch.positions)
        dim = self.kv_shape.head_dim
        for i, layer in enumerate(base.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            bsz, length = h.shape[:2]
            q = attn.q_proj(h).view(bsz, length, -1, dim)
            k = attn.k_proj(h).view(bsz, length, -1, dim)
            v = attn.v_proj(h).view(bsz, length, -1, dim).transpose(1, 2)
            if getattr(attn, "q_norm", None) is not None:  # Qwen3
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            x = x + attn.o_proj(self._attend(cache, i, batch, q, k, v, attn.scaling))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return base.norm(x)

    # -- reference paths (tests, accuracy checks) ---------------------------------------------

    @torch.inference_mode()
    def full_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits for every position of one sequence, recomputed without any cache: [L, V]."""
        ids = torch.tensor([token_ids], device=self.device)
        return self.model(input_ids=ids, use_cache=False).logits[0].float()
