"""Accelerators the inference-cost model knows: dense bf16 tensor throughput, HBM bandwidth and memory.

Peak FLOP/s are the vendors' dense figures (NVIDIA datasheets quote bf16 "with sparsity", twice the
dense rate; the dense rate is what a matmul reaches). Bandwidths are the datasheet HBM figures in
decimal GB/s. A100-SXM-80GB is what the paper's cost analysis assumed (Chen et al. 2025, Figure 4).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_bf16_flops: float  # dense, FLOP/s
    hbm_bytes_per_s: float
    memory_bytes: float
    source: str


GPUS: dict[str, GPUSpec] = {
    spec.name: spec
    for spec in (
        GPUSpec("A100-SXM-40GB", 312e12, 1555e9, 40e9, "NVIDIA A100 Tensor Core GPU datasheet (2021), SXM 40GB column"),
        GPUSpec("A100-SXM-80GB", 312e12, 2039e9, 80e9, "NVIDIA A100 Tensor Core GPU datasheet (2021), SXM 80GB column"),
        GPUSpec("A100-PCIe-80GB", 312e12, 1935e9, 80e9,
                "NVIDIA A100 Tensor Core GPU datasheet (2021), PCIe 80GB column"),
        GPUSpec("H100-SXM-80GB", 989e12, 3350e9, 80e9, "NVIDIA H100 Tensor Core GPU datasheet (2023), H100 SXM column"),
        GPUSpec("H100-PCIe-80GB", 756e12, 2000e9, 80e9,
                "NVIDIA H100 Tensor Core GPU datasheet (2023), H100 PCIe column"),
        GPUSpec("H200-SXM-141GB", 989e12, 4800e9, 141e9,
                "NVIDIA H200 Tensor Core GPU datasheet (2024), H200 SXM column"),
        GPUSpec("B200-180GB", 2250e12, 8000e9, 180e9,
                "NVIDIA HGX B200 specifications (2025): 36 PFLOPS sparse bf16 over 8 GPUs"),
        GPUSpec("L40S-48GB", 362e12, 864e9, 48e9, "NVIDIA L40S datasheet (2023)"),
        GPUSpec("L4-24GB", 121e12, 300e9, 24e9, "NVIDIA L4 Tensor Core GPU datasheet (2023)"),
        GPUSpec("MI300X-192GB", 1307e12, 5300e9, 192e9, "AMD Instinct MI300X accelerator datasheet (2023)"),
    )
}

PAPER_GPU = "A100-SXM-80GB"
# Short names of the common training GPUs.
ALIASES = {"A100-40GB": "A100-SXM-40GB", "A100-80GB": "A100-SXM-80GB", "H100-80GB": "H100-SXM-80GB",
           "H200-141GB": "H200-SXM-141GB"}


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    if isinstance(name, GPUSpec):
        return name
    name = ALIASES.get(name, name)
    if name not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; choose one of {list(GPUS)} or pass a GPUSpec with your device's "
                         "numbers")
    return GPUS[name]


def gpu_names() -> list[str]:
    """Every name ``get_gpu`` accepts: the full names and their short aliases."""
    return [*GPUS, *ALIASES]


def gpu_name(text: str) -> str:
    """An argparse type: a GPU name `get_gpu` knows, else one line listing the known ones."""
    import argparse

    try:
        get_gpu(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown GPU {text!r}; choose one of {', '.join(gpu_names())}") from None
    return text
