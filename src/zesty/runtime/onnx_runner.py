"""The ONNX Runtime backend: one InferenceSession per compiled head.

Thread settings are part of the recipe (intra-op = physical cores, one inter-op thread,
sequential execution), never left to defaults. On CUDA, inputs and outputs go through IO
binding so a batch makes one host->device copy each way.

Spinning. ORT's intra-op threads spin-wait between the parallel sections of a run. Alone on
the machine that is fastest (batch-1 p50 4.7 vs 5.9 ms for MiniLM int8 behind the server).
Under load, the event loop needs CPU at the same time, the spinning threads steal it, and a
parallel section waits on whichever thread was descheduled: with spinning off, MiniLM
served 12% more requests/s at 32 clients (324 vs 290 req/s, four alternating 12 s rounds on
the 2-core machine). So a CPU runner with more than one thread holds two sessions of the
same graph, spinning and not, and the batcher picks per batch (`forward(..., backlog=...)`):
the calm one when sequences are already waiting behind the batch. Measured that way: 301
against 278 req/s (six alternating rounds). The cost is a second copy of the weights in
memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zesty.runtime.heads import Head

GRAPH_LEVELS = {"disabled": 0, "basic": 1, "extended": 2, "all": 99}


def session_options(threads: int, graph_level: str = "all", spin: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
        dual_spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.head = head
        self.provider = provider
        self.session = ort.InferenceSession(
            str(model_file), session_options(threads, graph_level), providers=[provider]
        )
        self._calm = None  # the non-spinning twin, for batches under load (module docstring)
        if dual_spin and threads > 1 and provider == "CPUExecutionProvider":
            self._calm = ort.InferenceSession(
                str(model_file), session_options(threads, graph_level, spin=False), [provider]
            )
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self._outputs = list(head.outputs)

    def forward(
        self, inputs: dict[str, np.ndarray], backlog: bool = False
    ) -> dict[str, np.ndarray]:
        """Run a padded batch; `backlog` (more work is queued) selects the non-spinning session."""
        feed = {name: inputs[name] for name in self.input_names}
        if self.provider == "CUDAExecutionProvider":
            return self._forward_bound(feed)
        session = self._calm if backlog and self._calm is not None else self.session
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
