"""The ONNX Runtime backend: one InferenceSession per compiled head.

Thread settings are part of the recipe (intra-op = physical cores, one inter-op thread,
sequential execution), never left to defaults. On CUDA, inputs and outputs go through IO
binding so a batch makes one host->device copy each way.

Two sessions on a multi-core CPU. The main session uses every core (intra-op threads =
physical cores, spinning between parallel sections: fastest for a lone batch). Its one-thread
twin serves `forward(..., narrow=True)`: under load the batcher runs one batch per core on the
compute pool (zesty.serving.compute), which beats splitting every batch across the cores once
anything else (the event loop, tokenization, a client) wants CPU too. Before the twin was
single-threaded it was a non-spinning copy of the main session, chosen the same way: that was
worth +8% at 32 clients; one-core lanes are worth more (docs/serving.md). The cost is a
second copy of the weights in memory. The twin may load a different file of the same
function: the compiler's packed-rows graph (zesty.compile.unpad), which computes only the real
tokens of a padded batch; it is kept only where it measured faster on padded batches.

SkipLayerNormalization. A session at level "all" fuses each residual Add + LayerNormalization
into one SkipLayerNormalization node. ORT's CPU kernel for it is slow: 417 us against 77 us
for Add, Add, LayerNormalization on a (6, 36, 384) fp32 input, one thread (ORT 1.32, the
2-core EPYC), and the whole MiniLM int8 graph is 1.15-1.35x faster without the fusion at
every batch shape from 1x16 to 32x128 tokens, on one thread and on two
(`benchmarks/skip_layernorm.py`, `benchmarks/results/skip_layernorm.json`). So CPU sessions
run without it (`CPU_DISABLED`), and the compiler saves fused graphs with those nodes unfused
(compile.recipes.fuse). CUDA sessions keep it. The two sessions then differ only in their
threads; the accuracy gate scores both anyway (the worse value of each metric counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zesty.runtime.heads import Head

GRAPH_LEVELS = {"disabled": 0, "basic": 1, "extended": 2, "all": 99}
#: ORT graph optimizers CPU sessions run without (module docstring)
CPU_DISABLED = ("SkipLayerNormFusion",)


def session_options(threads: int, graph_level: str = "all"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel(GRAPH_LEVELS[graph_level])
    opts.log_severity_level = 3
    return opts


class OnnxRunner:
    backend = "onnx"

    def __init__(
        self,
        model_file: Path,
        head: Head,
        *,
        threads: int,
        graph_level: str = "all",
        provider: str = "CPUExecutionProvider",
        narrow_twin: bool = False,
        narrow_file: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        self.head = head
        self.provider = provider
        cpu = provider == "CPUExecutionProvider"
        disabled = list(CPU_DISABLED) if cpu else []

        def session(n: int, file: Path = model_file):
            opts = session_options(n, graph_level)
            return ort.InferenceSession(str(file), opts, [provider], disabled_optimizers=disabled)

        self.session = session(threads)
        self._narrow = None  # the one-thread twin, for batches run side by side (docstring)
        if narrow_twin and threads > 1 and cpu:
            self._narrow = session(1, narrow_file or model_file)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self._outputs = list(head.outputs)

    @property
    def narrow_capable(self) -> bool:
        return self._narrow is not None

    def release_narrow(self) -> None:
        """Drop the one-thread twin (the compiler scores it, then times only the main one)."""
        self._narrow = None

    def forward(self, inputs: dict[str, np.ndarray], narrow: bool = False) -> dict[str, np.ndarray]:
        """Run a padded batch; `narrow` selects the one-thread session (when there is one)."""
        feed = {name: inputs[name] for name in self.input_names}
        if self.provider == "CUDAExecutionProvider":
            return self._forward_bound(feed)
        session = self._narrow if narrow and self._narrow is not None else self.session
        values = session.run(self._outputs, feed)
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self._outputs, values)}

    def _forward_bound(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self.session.io_binding()
        for name, value in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self._outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self._outputs, values)}
