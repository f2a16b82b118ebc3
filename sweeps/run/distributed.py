"""Processes and devices. One process per GPU (or one per CPU test worker), started by torchrun (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the environment) or by SLURM with one task per GPU (srun, or
submitit, which runs srun; the rendezvous is then the first node of the allocation). Anything else is a
single process; it gets a one-process group when the model is wrapped in FSDP2 anyway (bf16: see
sweeps/run/parallelize.py). Collectives time out after `timeout_min` (NCCL's default of 10 minutes is shorter
than a large checkpoint can take on a slow file system)."""

from __future__ import annotations

import datetime
import os
import re
import resource
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Environment:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(timeout_min: float = 30.0, single_process_group: bool = False) -> Environment:
    """This process's place among the processes of the run; joins their process group. `single_process_group`:
    a lone process gets a group of one as well."""
    if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _export_slurm_rendezvous()
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(minutes=timeout_min)
    if not dist.is_initialized():
        if world_size > 1:
            dist.init_process_group(backend=backend, timeout=timeout)
        elif single_process_group:
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return Environment(rank, world_size, local_rank, device)


def _export_slurm_rendezvous() -> None:
    """torchrun's variables for a SLURM job step that runs one task per GPU (start it with srun; submitit
    does). Under submitit its JobEnvironment supplies them; under a plain srun, SLURM's own variables do."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        from submitit.helpers import TorchDistributedEnvironment

        # Leaves CUDA_VISIBLE_DEVICES alone (with --gpus-per-task SLURM has already narrowed it); overwrite: it
        # keeps a MASTER_PORT set beforehand but refuses to write over it.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ["SLURM_LOCALID"]
    os.environ.setdefault("MASTER_ADDR", first_host(os.environ["SLURM_JOB_NODELIST"]))
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 40000))


def first_host(node_list: str) -> str:
    """The first host of a SLURM node list: "gpu[003-005,009],cpu1" -> "gpu003", "a1,a2" -> "a1"."""
    match = re.match(r"([^,\[]+)(?:\[([^\],-]+))?", node_list)
    return match.group(1) + (match.group(2) or "")


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], env: Environment) -> list[float]:
    if env.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_max(values: list[int], env: Environment) -> list[int]:
    """The largest of each value over all processes."""
    if env.world_size == 1:
        return values
    tensor = torch.tensor(values, device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(value) for value in tensor.tolist()]


def barrier(env: Environment) -> None:
    if env.world_size > 1:
        dist.barrier()


def peak_memory_gb(env: Environment) -> float:
    """Peak memory of this process: CUDA tensors on a GPU, else the peak resident set size (Linux: KiB)."""
    if env.device.type == "cuda":
        return torch.cuda.max_memory_allocated(env.device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
