"""What machine this is: CPU model, the ISA flags that change kernels, cores, GPU.

The fingerprint goes into every compiled artifact's cache key and manifest: an artifact
tuned on one CPU is never silently reused on another.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass

from zesty.settings import physical_cores

# Flags that select different GEMM / quantized kernels in ONNX Runtime and PyTorch.
_ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "sve",
    "i8mm",
    "bf16",
)


@dataclass(frozen=True)
class Hardware:
    cpu_model: str
    isa: tuple[str, ...]
    physical_cores: int
    logical_cpus: int
    machine: str
    gpu: str | None

    def fingerprint(self) -> str:
        gpu = self.gpu or "none"
        return (
            f"{self.machine}|{self.cpu_model}|{','.join(self.isa)}|{self.physical_cores}c|gpu:{gpu}"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"fingerprint": self.fingerprint()}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and model in ("", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU" here
        return None
    return None


@functools.lru_cache(maxsize=1)
def probe() -> Hardware:
    import os

    model, flags = _cpuinfo()
    return Hardware(
        cpu_model=model,
        isa=tuple(f for f in _ISA_FLAGS if f in flags),
        physical_cores=physical_cores(),
        logical_cpus=len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
        machine=platform.machine(),
        gpu=_gpu_name(),
    )


def cuda_available_in_ort() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()
