"""Export a model head to ONNX with dynamic batch and sequence axes.

We use PyTorch's TorchScript-based exporter (`dynamo=False`): it needs no extra package,
handles every encoder architecture we serve, and its graphs are the ones ONNX Runtime's
transformer fusions recognise. (The newer torch.export-based exporter needs `onnxscript` and
emits graphs the fusion patterns do not match yet.) The exporter mutates the module it
traces, so we always export from a freshly loaded copy and throw it away.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

from zesty.runtime.heads import Head

OPSET = 17
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class ExportError(Exception):
    """The architecture cannot be exported; the message says why."""


def export_onnx(
    model_path: Path, head: Head, out_file: Path, *, allow_pickle: bool = False
) -> list[str]:
    """Write `out_file` and return the graph's input names."""
    import torch

    from zesty.runtime.torch_runner import load_pretrained

    model = load_pretrained(
        head.auto_class,
        model_path,
        allow_pickle=allow_pickle,
        what=head.name,
        attn_implementation="eager",
    )
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in _MODEL_INPUTS if n in accepted]
    outputs = list(head.outputs)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(names, args)))
            return tuple(out[o] for o in outputs)

    ids = torch.randint(5, 100, (2, 16), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # a padded row, so masking is traced as data, not a constant
    sample = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    for o, per_token in head.outputs.items():
        axes[o] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Wrapper(),
                tuple(sample[n] for n in names),
                str(out_file),
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure means "keep torch"
        raise ExportError(
            f"{type(model).__name__} cannot be exported to ONNX: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    return names
