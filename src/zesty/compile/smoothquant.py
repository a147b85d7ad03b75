"""Activation smoothing before dynamic int8: SmoothQuant, on the exported ONNX graph.

Dynamic int8 in ONNX Runtime quantizes each MatMul's activation with one scale per tensor.
Transformer encoders have a few outlier channels (BERT-family LayerNorm outputs reach ~30
where most channels stay within ~1), so one scale per tensor leaves the ordinary channels a
handful of int8 levels: all-MiniLM-L6-v2 loses ~1% cosine that way, over our budget. The
remedy (Xiao et al., SmoothQuant, 2022) moves the outliers into the weights, which are
quantized per output channel: for a MatMul ``X @ W`` with a constant ``W`` it rewrites
``(X / s) @ (s * W)`` with, per input channel ``j``,

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

measured on calibration text. The rewrite is exact in fp32; only the int8 rounding moves.

A second source of error is padding. The pad rows of a batch carry their own activations
(more negative than real tokens in MiniLM), they widen the per-tensor range, and after
smoothing they can dominate it. Where the graph takes an ``attention_mask`` of the same
[batch, length] as a MatMul's input, the smoothed input is also multiplied by the mask.
Pad rows never reach real tokens (attention masks them as keys) and their outputs are
discarded, so this changes no real output, and each sequence's quantization no longer
depends on how much padding its batch has.

MatMuls sharing one input (Q, K and V) share one ``s``. The inserted ``Mul`` nodes are cheap
elementwise ops (measured: ~6% of the full-int8 graph's time on MiniLM, batch 32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MASK_INPUT = "attention_mask"
MASK3 = "zesty_smooth_mask3"  # the [batch, length, 1] float mask the pad-zeroing Muls read
PADZERO = "/zesty_padzero"  # name suffix of those Muls (compile/unpad.py drops them)


# ops computing input[0] @ input[1] (+ more): MatMul, and ORT's fused Attention (packed QKV)
_WEIGHT_OPS = {"MatMul", "Attention"}


def _weight_matmuls(model) -> dict[str, list]:
    """Nodes multiplying an activation by a constant 2-D weight, grouped by the activation."""
    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if node.op_type not in _WEIGHT_OPS or node.input[1] not in inits:
            continue
        if len(inits[node.input[1]].dims) == 2 and node.input[0] not in inits:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_ranges(src: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, dict]:
    """Per-channel max |x| of every weight MatMul's input over the calibration feeds.

    Also records whether the activation is [batch, length, channels] with the feed's
    batch and length (so the attention mask can zero its pad rows).
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(src))
    names = list(_weight_matmuls(model))
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    stats: dict[str, dict] = {}
    for feed in feeds:
        shape = feed["input_ids"].shape if "input_ids" in feed else None
        for name, value in zip(names, session.run(names, feed)):
            amax = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            entry = stats.setdefault(name, {"amax": amax, "maskable": True})
            entry["amax"] = np.maximum(entry["amax"], amax)
            entry["maskable"] &= value.ndim == 3 and shape is not None and value.shape[:2] == shape
    return stats


def smooth(src: Path, out: Path, stats: dict[str, dict], alpha: float) -> Path:
    """Write ``src`` with every weight MatMul's input smoothed by ``alpha`` (0..1)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    has_mask = any(i.name == MASK_INPUT for i in model.graph.input)
    new_nodes = []
    masked = False
    for x, nodes in _weight_matmuls(model).items():
        if x not in stats:
            continue
        weights = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        if len({w.shape[0] for w in weights}) != 1 or _shared(nodes, model):
            continue  # a weight read elsewhere too (tied) cannot be rescaled for this input
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        a_max = stats[x]["amax"]
        s = np.maximum(a_max, 1e-5) ** alpha / np.maximum(w_max, 1e-5) ** (1.0 - alpha)
        s = np.clip(s, 1e-5, 1e5).astype(np.float32)
        for node, w in zip(nodes, weights):
            inits[node.input[1]].CopyFrom(
                numpy_helper.from_array((w * s[:, None]).astype(np.float32), node.input[1])
            )
        inv = f"{x}/zesty_smooth_inv"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        smoothed = f"{x}/zesty_smoothed"
        mask = has_mask and stats[x]["maskable"]
        scaled = f"{smoothed}_unmasked" if mask else smoothed
        new_nodes.append(helper.make_node("Mul", [x, inv], [scaled], name=f"{x}/zesty_smooth"))
        if mask:
            new_nodes.append(
                helper.make_node("Mul", [scaled, MASK3], [smoothed], name=f"{x}{PADZERO}")
            )
            masked = True
        for node in nodes:
            node.input[0] = smoothed
    if masked:
        axes = "zesty_smooth_axis2"
        model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes))
        new_nodes[:0] = [
            helper.make_node(
                "Cast", [MASK_INPUT], ["zesty_smooth_maskf"], to=onnx.TensorProto.FLOAT
            ),
            helper.make_node("Unsqueeze", ["zesty_smooth_maskf", axes], [MASK3]),
        ]
    _insert_after_producers(model, new_nodes)
    onnx.save(model, str(out))
    return out


def _shared(nodes: list, model) -> set[str]:
    """Weights of ``nodes`` that some other node also reads (tied weights)."""
    mine = {id(n) for n in nodes}
    names = {n.input[1] for n in nodes}
    return {
        name
        for other in model.graph.node
        if id(other) not in mine
        for name in other.input
        if name in names
    }


def _insert_after_producers(model, new_nodes: list) -> None:
    """Place each new node right after the node that produces its first input (or first, for
    graph inputs), which keeps the graph topologically sorted as ONNX requires. New nodes
    only read original tensors, the mask nodes, or each other in the order given."""
    by_input: dict[str, list] = {}
    for node in new_nodes:
        by_input.setdefault(node.input[0], []).append(node)

    def emit(node, out: list) -> None:
        out.append(node)
        for produced in node.output:
            for follower in by_input.pop(produced, []):
                emit(follower, out)

    ordered: list = []
    for name in [i.name for i in model.graph.input] + [i.name for i in model.graph.initializer]:
        for follower in by_input.pop(name, []):
            emit(follower, ordered)
    for node in list(model.graph.node):
        emit(node, ordered)
    if by_input:
        raise ValueError(f"smoothing reads tensors nothing produces: {sorted(by_input)[:3]}")
    del model.graph.node[:]
    model.graph.node.extend(ordered)
