"""Packed rows: a fused encoder graph rewritten to compute only the real tokens' rows.

A padded batch of B sequences of at most S tokens runs every GEMM, GELU and LayerNorm on
B*S rows, though the pad rows' results are thrown away. Under load the batcher groups
requests by length, and batches still carry ~12% padding (docs/serving.md). Only attention
mixes rows; every other op of a fused BERT-family encoder works row by row. So this rewrite:

- gathers the real tokens' rows once, after the embeddings: [B, S, H] -> [N, H];
- runs the row-wise ops on [N, ...] unchanged (MatMul, the int8 MatMulInteger pattern,
  LayerNormalization, BiasGelu, elementwise ops with per-channel constants);
- for each attention node, computes the Q/K/V projection on the N rows, scatters it back to
  [B, S, 3H] for ORT's MultiHeadAttention (with the key padding mask), and gathers the
  context's real rows again;
- scatters the outputs back to [B, S, H], with zeros at pad positions.

Exactness: every real row sees the same arithmetic. Dynamic int8 takes one scale per tensor;
SmoothQuant's graphs already zero the pad rows before each quantization (smoothquant.py), so
the packed tensors' ranges equal the padded ones' and the rewrite drops those masking Muls.
(Plain dynamic int8 graphs, which do not zero pad rows, get ranges from the real rows only:
a different function, which is why the compiler scores it.) On all-MiniLM-L6-v2's int8
graph the packed graph's real rows match bit for bit; one-thread time packed / padded was
1.00 / 0.96 / 0.91 / 0.83 on batches with 0 / 6 / 12 / 22% padding
(`benchmarks/packed_rows.py`, `benchmarks/results/packed_rows.json`). The compiler measures
it per model before using it (autotune.py, `Autotuner.pack_narrow`).

Anything this module does not recognise as row-wise gets its inputs scattered back to the
padded layout first (pad positions then hold a neighbouring real row), so an unknown op
costs speed and leaves the real tokens' results unchanged; graphs without an
EmbedLayerNormalization, an attention_mask input or a recognised attention node are refused
with ValueError. A batch must hold at least one real token (zesty's always do: every
sequence has its special tokens).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zesty.compile.smoothquant import MASK3, MASK_INPUT, PADZERO

# ops that act on each row of their [rows, channels] input alone, given per-channel (rank <= 1)
# or per-tensor other inputs
_ROW_WISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Cast",
    "Identity",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Gelu",
    "BiasGelu",
    "FastGelu",
    "LayerNormalization",
    "DynamicQuantizeLinear",  # per-tensor: the packed range is the real rows' range
    "MatMul",
    "MatMulInteger",
}
_MATMULS = {"MatMul", "MatMulInteger"}
# ops whose output has the rank of their inputs (so all-small inputs give a small output)
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Cast", "Identity"}
_ATTENTION = {"Attention", "QAttention"}
_UNSUPPORTED_ATTRS = {"unidirectional", "do_rotary", "past_present_share_buffer"}
_P = "zesty_rows"  # prefix of every tensor and node this rewrite adds


class _Rewrite:
    def __init__(self, model) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.rows: dict[str, str] = {}  # tensor -> its packed [N, C] version
        self.padded: dict[str, str] = {}  # packed tensor -> its [B, S, C] version
        self.small = {n for n, i in self.inits.items() if len(i.dims) <= 1}
        self.nodes: list = []
        self.produced: set[str] = set()  # tensors the new graph still computes padded
        self.count = 0

    def name(self, what: str) -> str:
        self.count += 1
        return f"{_P}/{what}_{self.count}"

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs):
        outputs = outputs or [self.name(op.lower())]
        domain = "com.microsoft" if op == "MultiHeadAttention" else ""
        self.nodes.append(
            self.helper.make_node(
                op, inputs, outputs, name=self.name(op), domain=domain or None, **attrs
            )
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, value: np.ndarray) -> str:
        name = self.name("const")
        self.graph.initializer.append(self.numpy_helper.from_array(value, name))
        return name

    def prelude(self) -> None:
        """Row indices of the real tokens (`idx`, [N]) and, for every padded position, the
        packed row to read back (`inv`, [B*S]: a pad reads a neighbouring real row, so every
        value is finite; pads are masked as keys and zeroed in the outputs)."""
        import onnx

        flat = self.node("Reshape", [MASK_INPUT, self.const(np.array([-1], np.int64))])
        flat = self.node("Cast", [flat], to=onnx.TensorProto.INT64)
        self.idx = self.node(
            "Reshape", [self.node("NonZero", [flat]), self.const(np.array([-1], np.int64))]
        )
        running = self.node("CumSum", [flat, self.const(np.array(0, np.int64))])
        # (pads before a row's first token read index -1: the last row, valid for Gather)
        self.inv = self.node("Sub", [running, self.const(np.array(1, np.int64))])
        batch_length = self.node("Shape", [MASK_INPUT])
        self.bs_any = self.node(
            "Concat", [batch_length, self.const(np.array([-1], np.int64))], axis=0
        )
        self.mask_i32 = self.node("Cast", [MASK_INPUT], to=onnx.TensorProto.INT32)
        maskf = self.node("Cast", [MASK_INPUT], to=onnx.TensorProto.FLOAT)
        self.mask3 = self.node("Unsqueeze", [maskf, self.const(np.array([2], np.int64))])

    def pack(self, padded: str) -> str:
        """[B, S, C] -> [N, C]"""
        flat = self.node("Flatten", [padded], axis=2)
        return self.node("Gather", [flat, self.idx], axis=0)

    def unpack(self, packed: str, out: str | None = None) -> str:
        """[N, C] -> [B, S, C] (pad positions hold a neighbour's row until masked)"""
        gathered = self.node("Gather", [packed, self.inv], axis=0)
        return self.node("Reshape", [gathered, self.bs_any], [out] if out else None)

    def to_padded(self, tensor: str) -> str:
        if tensor not in self.padded:
            self.padded[tensor] = self.unpack(self.rows[tensor])
        return self.padded[tensor]

    def attention(self, node) -> None:
        """QAttention / Attention -> projection on the rows + MultiHeadAttention, padded."""
        import onnx

        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if any(attrs.get(k) for k in _UNSUPPORTED_ATTRS):
            raise ValueError(f"{node.op_type} {node.name}: causal, rotary or past not supported")
        ins = list(node.input) + [""] * 9
        extra = ins[8:] if node.op_type == "QAttention" else ins[4:]
        if any(extra) or len(node.output) != 1:
            raise ValueError(f"{node.op_type} {node.name}: past or attention bias not supported")
        weight = self.inits.get(ins[1])
        if weight is None or ins[2] not in self.inits or len(weight.dims) != 2:
            raise ValueError(f"{node.op_type} {node.name}: weights are not constants")
        sizes = attrs.get("qkv_hidden_sizes") or [weight.dims[1] // 3] * 3
        if len(set(sizes)) != 1 or sum(sizes) != weight.dims[1]:
            raise ValueError(f"{node.op_type} {node.name}: unequal Q/K/V sizes {sizes}")
        x = self.rows[ins[0]]
        if node.op_type == "QAttention":
            scale = self.node("Mul", [ins[3], ins[4]])
            product = self.node("MatMulInteger", [x, ins[1], ins[6], ins[7]])
            product = self.node("Cast", [product], to=onnx.TensorProto.FLOAT)
            product = self.node("Mul", [product, scale])
        else:
            product = self.node("MatMul", [x, ins[1]])
        qkv = self.unpack(self.node("Add", [product, ins[2]]))
        q, k, v = self.node(
            "Split",
            [qkv, self.const(np.array(sizes, np.int64))],
            [self.name("q"), self.name("k"), self.name("v")],
            axis=2,
        )
        kept = {k: attrs[k] for k in ("scale", "mask_filter_value") if k in attrs}
        context = self.node(
            "MultiHeadAttention",
            [q, k, v, "", self.mask_i32],
            num_heads=int(attrs["num_heads"]),
            **kept,
        )
        self.rows[node.output[0]] = self.pack(context)

    def row_wise(self, node) -> bool:
        """Whether `node` can run on packed rows as it is."""
        if node.op_type not in _ROW_WISE or not any(i in self.rows for i in node.input):
            return False
        if node.op_type in _MATMULS:
            w = self.inits.get(node.input[1])
            zero_points = all(i in self.small or i == "" for i in node.input[2:])
            return node.input[0] in self.rows and w is not None and len(w.dims) == 2 and zero_points
        return all(i in self.rows or i in self.small or i == "" for i in node.input)

    def run(self) -> None:
        graph = self.graph
        names = {i.name for i in graph.input}
        if MASK_INPUT not in names:
            raise ValueError(f"the graph has no {MASK_INPUT!r} input")
        embeds = [n for n in graph.node if n.op_type == "EmbedLayerNormalization"]
        if len(embeds) != 1:
            raise ValueError("packed rows need exactly one EmbedLayerNormalization node")
        if not any(n.op_type in _ATTENTION for n in graph.node):
            raise ValueError("no fused attention node in the graph")
        outputs = {o.name for o in graph.output}
        self.prelude()
        for node in graph.node:
            if node is embeds[0]:
                self.nodes.append(node)
                self.produced.update(node.output)
                self.rows[node.output[0]] = self.pack(node.output[0])
            elif node.op_type in _ATTENTION and node.input[0] in self.rows:
                self.attention(node)
            elif node.name.endswith(PADZERO) and MASK3 in node.input and node.input[0] in self.rows:
                # pad rows are gone: the mask multiply is the identity on the packed rows
                self.rows[node.output[0]] = self.rows[node.input[0]]
            elif self.row_wise(node):
                for i, name in enumerate(node.input):
                    if name in self.rows:
                        node.input[i] = self.rows[name]
                first = node.output[0]
                renamed = f"{_P}/{first}" if first in outputs else first
                node.output[0] = renamed
                self.rows[first] = renamed
                if node.op_type == "DynamicQuantizeLinear":
                    self.small.update(node.output[1:])
                self.nodes.append(node)
            else:
                if node.op_type in _ELEMENTWISE and all(
                    i in self.small or i == "" for i in node.input
                ):
                    self.small.update(node.output)  # e.g. the product of two scales
                self.produced.update(node.output)
                for i, name in enumerate(node.input):
                    if name in self.rows:
                        node.input[i] = self.to_padded(name)
                self.nodes.append(node)
        for out in graph.output:
            # an output still produced in the padded layout (the embeddings) stays as it is
            if out.name in self.rows and out.name not in self.produced:
                self.node("Mul", [self.unpack(self.rows[out.name]), self.mask3], [out.name])
        self._prune()
        del graph.node[:]
        graph.node.extend(self.nodes)
        del graph.value_info[:]  # packed tensors kept their names but lost a dimension

    def _prune(self) -> None:
        """Drop nodes whose outputs nothing reads (the attention mask index, smoothquant's
        mask nodes)."""
        needed = {o.name for o in self.graph.output}
        kept = []
        for node in reversed(self.nodes):
            if any(o in needed for o in node.output if o):
                kept.append(node)
                needed.update(i for i in node.input if i)
        self.nodes = kept[::-1]
        used = {i for n in self.nodes for i in n.input}
        unused = [i for i in self.graph.initializer if i.name not in used]
        for init in unused:
            self.graph.initializer.remove(init)


def unpad(src: Path, out: Path) -> Path:
    """Write ``src`` rewritten to packed rows (module docstring); ValueError if it does not
    apply to this graph."""
    import onnx

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ValueError(f"opset {opset} < 13")
    _Rewrite(model).run()
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
