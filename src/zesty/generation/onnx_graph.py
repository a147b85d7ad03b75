"""Build the compiled decoder graph: one ONNX graph per causal LM, over a shared KV buffer.

We write this graph ourselves (from the transformers model's weights, with `onnx.helper`)
instead of exporting the PyTorch module, because the point is the attention: every layer is
one `com.microsoft.GroupQueryAttention` node whose past and present key/value tensors are the
engine's preallocated cache (`[slots, kv_heads, max_len, head_dim]`, bound in place through
IO binding), with per-row lengths (`seqlens_k`). A step therefore writes only the new tokens'
keys/values and never copies the cache — what the exporter's past/present-concat graphs
cannot do. The rest is the model's math with ONNX Runtime's fused CPU kernels
(LayerNormalization / SimplifiedLayerNormalization, MatMul, Gelu/SiLU).

Families: GPT-2 (learned positions, LayerNorm, tanh GELU, fused c_attn) and the Llama family
(Llama, Mistral, Qwen2 with q/k/v biases, Qwen3 with q/k RMSNorm): rotary embeddings
(ONNX Runtime's RotaryEmbedding) from cos/sin tables taken from the model's own rotary module (so
rope scaling variants are whatever transformers computes), RMSNorm, grouped-query attention,
SiLU-gated MLP, tied or untied LM head.

Graph inputs: `input_ids` [B, S] int64, `position_ids` [B, S] int64 (GPT-2's learned
positions and the Llama family's rotary positions), `seqlens_k` [B] int32 (each row's total
length - 1), `total_sequence_length` [] int32, `logits_index` [N] int64 (rows of the
flattened [B*S] tokens that go through the LM head: the last token of each row for a step,
every token for `full_logits`), and per layer `past.{i}.key` / `past.{i}.value`. Outputs:
`logits` [N, vocab] and `present.{i}.key` / `present.{i}.value` (the same buffers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OPSET = 17
FAMILY_GPT2 = "gpt2"
FAMILY_LLAMA = "llama"


class _Builder:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def weight(self, name: str, array) -> str:
        from onnx import numpy_helper

        arr = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def const(self, name: str, values, dtype=np.int64) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs):
        from onnx import helper

        node_name = self.name(op_type)
        outs = [f"{node_name}_out{i}" for i in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outs, name=node_name, domain=domain, **attrs)
        )
        return outs[0] if n_out == 1 else outs

    def linear(self, x: str, name: str, weight_t, bias=None) -> str:
        """x @ W (+ b); `weight_t` is [in, out]."""
        y = self.op("MatMul", [x, self.weight(f"{name}.weight", weight_t)])
        if bias is not None:
            y = self.op("Add", [y, self.weight(f"{name}.bias", bias)])
        return y


def _t(tensor) -> np.ndarray:
    return tensor.detach().to("cpu").float().numpy()


def _bias(linear) -> np.ndarray | None:
    return None if linear.bias is None else _t(linear.bias)


class Unsupported(ValueError):
    """The model's configuration has no compiled graph here (it keeps the PyTorch backend)."""


GPT2_ACTIVATIONS = {
    "gelu_new": "FastGelu",
    "gelu_pytorch_tanh": "FastGelu",
    "gelu_fast": "FastGelu",
    "gelu": "Gelu",
}
_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}  # position-independent tables


def family_of(model) -> str:
    from zesty.generation.runner_torch import GPT2_ARCHITECTURES, LLAMA_ARCHITECTURES

    arch = type(model).__name__
    if arch in GPT2_ARCHITECTURES:
        return FAMILY_GPT2
    if arch in LLAMA_ARCHITECTURES:
        return FAMILY_LLAMA
    raise Unsupported(f"{arch} has no compiled decoder graph")


def check_supported(model) -> str:
    """The model's family, or `Unsupported` saying which setting has no compiled graph —
    checked before any work, so an unsupported model never gets a wrong graph."""
    family = family_of(model)
    c = model.config
    if family == FAMILY_GPT2:
        act = getattr(c, "activation_function", "gelu_new")
        if act not in GPT2_ACTIVATIONS:
            raise Unsupported(f"GPT-2 activation {act!r} has no compiled kernel here")
        if getattr(c, "scale_attn_by_inverse_layer_idx", False):
            raise Unsupported("GPT-2 scale_attn_by_inverse_layer_idx is not compiled")
        return family
    if getattr(c, "hidden_act", "silu") != "silu":
        raise Unsupported(f"activation {c.hidden_act!r} has no compiled kernel here")
    rope = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    rope_type = (
        rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    )
    if rope_type not in _ROPE_TYPES:
        # longrope / dynamic pick their tables by sequence length: one table would be wrong
        raise Unsupported(f"rope scaling {rope_type!r} is not compiled (tables depend on length)")
    return family


HEAD_APPROX = "lm_head_approx"  # the approximate head's MatMul node, when `rescore_top` > 0


def build_decoder(model, out: Path, max_positions: int, rescore_top: int = 0) -> Path:
    """Write `model`'s decoder graph (fp32) to `out` (weights as external data beside it).

    `rescore_top` > 0 builds the head for a quantized LM head: the head's MatMul (node
    `HEAD_APPROX`, which the compiler then quantizes alone) gives approximate logits, and the
    `rescore_top` highest of each row are recomputed exactly in fp32 from the head's rows
    ([vocab, hidden], gathered per candidate) and written back; every other logit is capped
    at the lowest recomputed one. The greedy token is then fp32's whenever fp32's best token
    is among the approximate top `rescore_top` (an overestimated tail token cannot overtake
    it), and so are the top logits; the tail keeps the quantized values.
    """
    import onnx
    from onnx import TensorProto, helper

    family = check_supported(model)
    b = _Builder()
    c = model.config
    if family == FAMILY_GPT2:
        layers, heads = c.n_layer, c.n_head
        kv_heads, head_dim = heads, c.n_embd // heads
    else:
        layers, heads, kv_heads = c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    cache_dims = ["batch", kv_heads, "max_len", head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
        helper.make_tensor_value_info("logits_index", TensorProto.INT64, ["rows"]),
    ]
    outputs = []
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past.{i}.{kind}", 1, cache_dims))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", 1, cache_dims))

    def attention(i: int, q: str, k: str, v: str, scale: float) -> str:
        out = b.op(
            "GroupQueryAttention",
            [q, k, v, f"past.{i}.key", f"past.{i}.value", "seqlens_k", "total_sequence_length"],
            n_out=3,
            domain="com.microsoft",
            num_heads=heads,
            kv_num_heads=kv_heads,
            scale=float(scale),
        )
        b.nodes[-1].output[1] = f"present.{i}.key"
        b.nodes[-1].output[2] = f"present.{i}.value"
        return out[0]

    if family == FAMILY_GPT2:
        tr = model.transformer
        wte = b.weight("wte", _t(tr.wte.weight))
        x = b.op(
            "Add",
            [
                b.op("Gather", [wte, "input_ids"]),
                b.op("Gather", [b.weight("wpe", _t(tr.wpe.weight)), "position_ids"]),
            ],
        )
        eps = float(c.layer_norm_epsilon)
        scale = head_dim**-0.5 if c.scale_attn_weights else 1.0
        e = c.n_embd
        split = b.const("split_qkv", [e, e, e])
        act = getattr(c, "activation_function", "gelu_new")
        for i, block in enumerate(tr.h):

            def ln(x: str, mod, name: str) -> str:
                g = b.weight(f"{name}.weight", _t(mod.weight))
                beta = b.weight(f"{name}.bias", _t(mod.bias))
                return b.op("LayerNormalization", [x, g, beta], axis=-1, epsilon=eps)

            h = ln(x, block.ln_1, f"h.{i}.ln_1")
            at = block.attn
            qkv = b.linear(h, f"h.{i}.attn.c_attn", _t(at.c_attn.weight), _t(at.c_attn.bias))
            q, k, v = b.op("Split", [qkv, split], n_out=3, axis=-1)
            o = attention(i, q, k, v, scale)
            x = b.op(
                "Add",
                [x, b.linear(o, f"h.{i}.attn.c_proj", _t(at.c_proj.weight), _t(at.c_proj.bias))],
            )
            h = ln(x, block.ln_2, f"h.{i}.ln_2")
            mlp = block.mlp
            h = b.linear(h, f"h.{i}.mlp.c_fc", _t(mlp.c_fc.weight), _t(mlp.c_fc.bias))
            h = b.op(GPT2_ACTIVATIONS[act], [h], domain="com.microsoft")
            h = b.linear(h, f"h.{i}.mlp.c_proj", _t(mlp.c_proj.weight), _t(mlp.c_proj.bias))
            x = b.op("Add", [x, h])
        g = b.weight("ln_f.weight", _t(tr.ln_f.weight))
        beta = b.weight("ln_f.bias", _t(tr.ln_f.bias))
        x = b.op("LayerNormalization", [x, g, beta], axis=-1, epsilon=eps)
        hidden = e
    else:
        import torch

        base = model.model
        embed = b.weight("embed_tokens", _t(base.embed_tokens.weight))
        x = b.op("Gather", [embed, "input_ids"])
        eps = float(c.rms_norm_eps)
        # rotary tables from the model's own rotary module (rope scaling included)
        pos = torch.arange(max_positions)[None, :]
        dummy = torch.zeros(1, dtype=torch.float32)
        with torch.no_grad():
            cos, sin = base.rotary_emb(dummy, pos)
        b.weight("cos_cache", _t(cos[0, :, : head_dim // 2]))
        b.weight("sin_cache", _t(sin[0, :, : head_dim // 2]))

        def rms(x: str, mod, name: str) -> str:
            g = b.weight(f"{name}.weight", _t(mod.weight))
            return b.op("SimplifiedLayerNormalization", [x, g], axis=-1, epsilon=eps)

        q_size, kv_size = heads * head_dim, kv_heads * head_dim
        split_qkv = b.const("split_qkv", [q_size, kv_size, kv_size])
        inter = c.intermediate_size
        split_mlp = b.const("split_mlp", [inter, inter])
        if getattr(base.layers[0].self_attn, "q_norm", None) is not None:
            head_shape = b.const("head_shape", [0, 0, -1, head_dim])
            flat_shape = b.const("flat_shape", [0, 0, -1])
        for i, layer in enumerate(base.layers):
            at = layer.self_attn
            h = rms(x, layer.input_layernorm, f"layers.{i}.input_layernorm")
            w = torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight], 0)
            bias = None
            if at.q_proj.bias is not None:  # Qwen2, Llama attention_bias
                bias = _t(torch.cat([at.q_proj.bias, at.k_proj.bias, at.v_proj.bias]))
            qkv = b.linear(h, f"layers.{i}.self_attn.qkv_proj", _t(w).T, bias)
            q, k, v = b.op("Split", [qkv, split_qkv], n_out=3, axis=-1)
            if getattr(at, "q_norm", None) is not None:  # Qwen3: RMSNorm per head on q and k
                for name in ("q", "k"):
                    norm = getattr(at, f"{name}_norm")
                    t = b.op("Reshape", [q if name == "q" else k, head_shape])
                    t = rms(t, norm, f"layers.{i}.self_attn.{name}_norm")
                    t = b.op("Reshape", [t, flat_shape])
                    q, k = (t, k) if name == "q" else (q, t)
            # rotary outside the attention kernel (whose built-in rotary wants head_dim % 16
            # == 0): ONNX Runtime's RotaryEmbedding at the explicit position ids
            q, k = (
                b.op(
                    "RotaryEmbedding",
                    [t, "position_ids", "cos_cache", "sin_cache"],
                    domain="com.microsoft",
                    interleaved=0,
                    num_heads=n,
                )
                for t, n in ((q, heads), (k, kv_heads))
            )
            o = attention(i, q, k, v, at.scaling)
            x = b.op(
                "Add",
                [
                    x,
                    b.linear(
                        o, f"layers.{i}.self_attn.o_proj", _t(at.o_proj.weight).T, _bias(at.o_proj)
                    ),
                ],
            )
            h = rms(x, layer.post_attention_layernorm, f"layers.{i}.post_attention_layernorm")
            mlp = layer.mlp
            gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], 0)
            gu_bias = None
            if mlp.gate_proj.bias is not None:  # Llama mlp_bias
                gu_bias = _t(torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias]))
            gate, up = b.op(
                "Split",
                [b.linear(h, f"layers.{i}.mlp.gate_up_proj", _t(gu).T, gu_bias), split_mlp],
                n_out=2,
                axis=-1,
            )
            act = b.op("Mul", [gate, b.op("Sigmoid", [gate])])
            h = b.linear(
                b.op("Mul", [act, up]),
                f"layers.{i}.mlp.down_proj",
                _t(mlp.down_proj.weight).T,
                _bias(mlp.down_proj),
            )
            x = b.op("Add", [x, h])
        x = rms(x, base.norm, "norm")
        hidden = c.hidden_size

    # LM head on the requested rows only: [B, S, E] -> [B*S, E] -> rows -> [N, vocab]
    flat = b.op("Reshape", [x, b.const("rows_shape", [-1, hidden])])
    rows = b.op("Gather", [flat, "logits_index"], axis=0)
    # tied or not, the head is its own [in, out] initializer: MatMul (and the quantizers)
    # want it transposed, and the embedding Gather wants it as it is
    head = _t(model.get_output_embeddings().weight)
    logits = b.linear(rows, "lm_head", head.T)
    if rescore_top > 0:
        out_w, in_w = model.get_output_embeddings().weight, model.get_input_embeddings().weight
        tied = out_w.data_ptr() == in_w.data_ptr() and out_w.shape == in_w.shape
        # tied: the embedding table is the head's rows already
        table = ("wte" if family == FAMILY_GPT2 else "embed_tokens") if tied else None
        _rescore(b, rows, logits, head, rescore_top, table)
    b.nodes[-1].output[0] = "logits"
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "vocab"]))

    graph = helper.make_graph(b.nodes, f"zesty-{family}-decoder", inputs, outputs, b.inits)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="zesty",
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(
        proto,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=out.name + ".data",
        size_threshold=1024,
    )
    return out


def _rescore(
    b: _Builder, rows: str, approx: str, head: np.ndarray, top: int, table: str | None
) -> None:
    """Exact fp32 logits for each row's `top` best approximate ones, the rest capped at the
    lowest of those: [N, vocab] -> [N, vocab]. Reads `top` head rows per row (a gather,
    [N, top, hidden]) instead of the whole head; `table` names an initializer that already
    holds the head as [vocab, hidden]."""
    assert b.nodes[-1].op_type == "MatMul" and b.nodes[-1].output[0] == approx
    b.nodes[-1].name = HEAD_APPROX
    k = b.const("rescore_top", [min(top, head.shape[0])])
    axis2 = b.const("rescore_axis", [2])
    _, idx = b.op("TopK", [approx, k], n_out=2, axis=-1, largest=1, sorted=0)
    table = table or b.weight("lm_head.rows", head)
    cand = b.op("Gather", [table, idx], axis=0)  # [N, top, hidden]
    exact = b.op("MatMul", [cand, b.op("Unsqueeze", [rows, axis2])])  # [N, top, 1]
    exact = b.op("Squeeze", [exact, axis2])
    # cap the tail: a token outside the top whose int8 logit overshoots cannot pass them
    capped = b.op("Min", [approx, b.op("ReduceMin", [exact], axes=[1], keepdims=1)])
    b.op("ScatterElements", [capped, idx, exact], axis=1)


def graph_meta(model, max_positions: int) -> dict:
    """What the runner needs to know about a built graph (stored in the artifact manifest)."""
    c = model.config
    family = family_of(model)
    if family == FAMILY_GPT2:
        layers, kv_heads, head_dim = c.n_layer, c.n_head, c.n_embd // c.n_head
    else:
        layers, kv_heads = c.num_hidden_layers, c.num_key_value_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return {
        "family": family,
        "layers": layers,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "max_positions": max_positions,
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
    }
