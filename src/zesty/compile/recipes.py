"""Candidate recipes and how each one turns the exported graph into a servable ONNX file.

A recipe is data: graph level (ORT basic optimizations, ORT all, or ORT's transformer
fusions), quantization (none, dynamic int8, static int8), its knobs, the layers kept in fp32,
precision and execution provider. Threads are part of the recipe too (intra-op = physical
cores), recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

GRID_VERSION = 6  # bump when the encoder candidate grid changes: cached artifacts are rebuilt

# Architectures whose exported graphs ORT's BERT fusion patterns understand.
_FUSION_MODEL_TYPES = {
    "bert": "bert",
    "distilbert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "mpnet": "bert",
    "albert": "bert",
}


@dataclass(frozen=True)
class Recipe:
    name: str
    graph: str = "basic"  # basic | all | fused
    quant: str | None = None  # None | dynamic | smooth | static | blockwise
    per_channel: bool = False
    reduce_range: bool = False
    fp32_layers: tuple[str, ...] = ()  # layers kept in fp32 (sensitivity-guided int8)
    precision: str = "fp32"  # fp32 | int8 | fp16
    provider: str = "CPUExecutionProvider"
    threads: int = 1
    bits: int = 8
    block_size: int = 0  # blockwise: weights and activations quantized per block of K
    smooth_alpha: float = 0.0  # smooth: SmoothQuant migration strength (0 = search)
    notes: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def session_graph_level(self) -> str:
        return "basic" if self.graph == "basic" else "all"

    def as_dict(self) -> dict:
        return asdict(self)


def default_recipes(precision: str, target: str, threads: int) -> list[Recipe]:
    """The candidate grid for a target ('cpu' or 'cuda') and a precision filter."""
    if target == "cuda":
        grid = [
            Recipe("fp16-cuda", "fused", precision="fp16", provider="CUDAExecutionProvider"),
            Recipe("fp32-cuda", "all", provider="CUDAExecutionProvider"),
        ]
    else:
        grid = [
            Recipe("fp32", "basic"),
            Recipe("fp32-ort-all", "all"),
            Recipe("fp32-fused", "fused"),
        ]
        for graph in ("basic", "fused"):
            for per_channel in (True, False):
                for reduce_range in (False, True):
                    name = f"int8-dyn{'-fused' if graph == 'fused' else ''}"
                    name += "-pc" if per_channel else "-pt"
                    name += "-rr" if reduce_range else ""
                    grid.append(
                        Recipe(name, graph, "dynamic", per_channel, reduce_range, precision="int8")
                    )
        # SmoothQuant + pad rows zeroed, then dynamic int8 on the MatMuls (smoothquant.py);
        # the migration strength is searched on the tune split when the candidate is built.
        grid.append(Recipe("int8-smooth", "basic", "smooth", True, False, precision="int8"))
        grid.append(Recipe("int8-smooth-fused", "fused", "smooth", True, False, precision="int8"))
        grid.append(Recipe("int8-static-pc", "basic", "static", True, False, precision="int8"))
        # MatMulNBits: blockwise weights, int8 compute with per-block activation scales
        # (accuracy_level 4) - far less activation error than one scale per tensor.
        for bits, block in ((8, 32), (8, 128), (4, 32)):
            grid.append(
                Recipe(
                    f"int{bits}-block{block}",
                    "basic",
                    "blockwise",
                    bits=bits,
                    block_size=block,
                    precision=f"int{bits}",
                )
            )
    if precision != "auto":
        grid = [r for r in grid if r.precision == precision]
    return [replace(r, threads=threads) for r in grid]


def fuse(exported: Path, out: Path, config) -> tuple[Path, dict[str, int]]:
    """ORT transformer fusions (attention, layer norm, GELU, ...). Returns the fused op counts.

    Residual adds and their LayerNormalization stay unfused: ORT's CPU SkipLayerNormalization
    kernel is slower than the ops it replaces (zesty.runtime.onnx_runner); a CUDA session
    fuses them itself."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = _FUSION_MODEL_TYPES.get(getattr(config, "model_type", ""))
    if model_type is None:
        raise ValueError(f"no transformer fusions for model type {config.model_type!r}")
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
    options = FusionOptions(model_type)
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    optimized = optimize_model(
        str(exported),
        model_type=model_type,
        num_heads=heads,
        hidden_size=hidden,
        optimization_options=options,
        opt_level=0,
    )
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not fused:
        raise ValueError("ORT found nothing to fuse in this graph")
    optimized.save_model_to_file(str(out))
    return out, fused


def weight_sizes(model_file: Path) -> dict[str, int]:
    """Nodes whose second input is a weight (what dynamic int8 quantizes: MatMul, and the
    fused Attention of ORT's transformer fusions) -> number of weight elements."""
    import math

    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    weights = {i.name: math.prod(i.dims) for i in graph.initializer}
    return {
        n.name: weights[n.input[1]]
        for n in graph.node
        if n.op_type in ("MatMul", "Attention") and len(n.input) > 1 and n.input[1] in weights
    }


def short_name(node: str) -> str:
    """`/model/encoder/layer.3/attention/self/query/MatMul` -> `layer.3/attention/self/query`."""
    m = re.search(r"(layers?[._/]\d+.*?)/?MatMul[^/]*$", node)
    return m.group(1) if m else node.strip("/")


def sensitivity_groups(nodes: list[str]) -> dict[str, list[str]]:
    """Two overlapping partitions of the weight MatMuls: by layer, and by kind of projection.

    `/model/encoder/layer.3/attention/self/query/MatMul` belongs to `layer.3` and to
    `attention/self/query`; nodes without a layer index form `other`.
    """
    groups: dict[str, list[str]] = {}
    for name in nodes:
        m = re.search(r"layers?[._/](\d+)[./](.*?)/?MatMul[^/]*$", name)
        if not m:
            groups.setdefault("other", []).append(name)
            continue
        groups.setdefault(f"layer.{m.group(1)}", []).append(name)
        groups.setdefault(m.group(2).strip("/") or "matmul", []).append(name)
    return groups


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # ORT's advice to pre-process (shape inference) is for its static quantizer's users:
        # our graphs are built or exported with their shapes
        if record.getMessage().startswith("Please consider to run pre-processing"):
            return False
        return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _quiet_ort_logging():
    """ORT's quantizers log every tensor at INFO straight to the root logger. A filter on the
    root logger drops those records only: named loggers (ours, uvicorn's) propagate to the
    root's handlers without passing its filters, so other threads' INFO logs still show."""
    root = logging.getLogger()
    quiet = _BelowWarning()
    root.addFilter(quiet)
    # the block-wise quantizer logs every node at INFO on its own logger
    nbits = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = nbits.level
    nbits.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        nbits.setLevel(level)


def quantize_dynamic(
    src: Path,
    out: Path,
    recipe: Recipe,
    exclude: list[str],
    op_types: list[str] | None = None,
    *,
    only: list[str] | None = None,
    external_data: bool = False,
) -> Path:
    """ORT dynamic int8. ``op_types=None`` is ORT's default set (MatMul, Attention, Gather...);
    the smooth recipe passes ["MatMul", "Attention"] so the embeddings stay fp32. `only`:
    quantize these MatMul nodes and keep every other node fp32 (the decoder's LM head)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    if only is not None:
        _matmuls_named(onnx.load(str(src), load_external_data=False), only, src)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_ort_logging():
        ort_quantize_dynamic(
            str(src),
            str(out),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            nodes_to_quantize=list(only) if only is not None else None,
            use_external_data_format=external_data,
            # Needed for graphs ORT already optimized (GUIDE §5: "Unable to find data type").
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    return out


def _matmuls_named(model, names: list[str], src: Path) -> set[str]:
    """Every MatMul node's name; ValueError if one of `names` is not among them (a quantizer
    told to quantize a node that is not there would silently leave the graph fp32)."""
    matmuls = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    if missing := set(names) - matmuls:
        raise ValueError(f"no MatMul node(s) {sorted(missing)} in {src}")
    return matmuls


def quantize_static(src: Path, out: Path, recipe: Recipe, calibration: list[dict]) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
    )
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self):
            return next(self._items, None)

    with _quiet_ort_logging():
        ort_quantize_static(
            str(src),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )
    return out


def quantize_blockwise(
    src: Path, out: Path, recipe, external_data: bool = False, only: list[str] | None = None
) -> Path:
    """MatMulNBits weights (``recipe.bits``, blocks of ``recipe.block_size`` along K), int8
    compute (accuracy_level 4). Used by the encoder grid and by the decoder compile, whose
    graphs are saved with external data (large models pass protobuf's 2 GB limit). `only`:
    quantize these MatMul nodes and keep every other one fp32."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=recipe.block_size, is_symmetric=True, accuracy_level=4, bits=recipe.bits
    )
    model = onnx.load(str(src))
    exclude = []
    if only is not None:
        # (the quantizer's nodes_to_include does not restrict what it quantizes: exclude)
        matmuls = _matmuls_named(model, only, src)
        exclude = sorted(matmuls - set(only))
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=exclude)
    with _quiet_ort_logging():
        quantizer.process()
    out.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(out), use_external_data_format=external_data)
    return out


def to_fp16(src: Path, out: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (for the CUDA execution provider)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(out))
    return out
