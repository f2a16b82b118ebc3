"""How one process lays the model out on its device, as small steps applied to a model built on the meta
device (nothing allocated until the end):

    lm = new model on the meta device
    trained = CausalLMLoss(lm)                         # sweeps/run/loss.py: the loss without the whole logits
    apply_activation_checkpointing(lm)                 # per decoder block, where the plan needs it
    apply_compile(lm)                                  # torch.compile per decoder block
    apply_fsdp(trained, env, strategy, precision)      # FSDP2: each block, then the root
    materialize(trained, env.device, seed)             # allocate this process's shards and initialise them

Precision: with bf16, FSDP2's MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32): float32
master weights and optimiser state, sharded; each block's weights all-gathered in bf16 once per forward (and
backward), so compute and the residual stream are bf16; gradients reduced in float32. A single process uses
the same policy on a one-process group, so one GPU computes exactly what a cluster cell computes.

Strategies (several processes, or bf16 on one):
- fsdp: parameters, gradients and optimiser state sharded (ZeRO-3); a block's weights are gathered for its
  forward and again for its backward, and gradients are reduce-scattered after every micro-batch.
- ddp: the DDP equivalent under the same precision policy (ZeRO-2): the weights gathered in forward stay for
  the backward, and gradients are reduced once per step (after the last micro-batch); the optimiser state is
  still sharded. Less communication, more memory: the planner picks it where it fits.
A single fp32 process is left as it is.

Initialisation does not depend on the number of processes: every parameter is drawn in full on each process
from a generator seeded by the run's seed and the module's name, by the model's own `_init_weights`, and each
process keeps its shard. So one process and eight start from the same weights."""

from __future__ import annotations

import hashlib

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from sweeps.run.distributed import Environment


def uses_fsdp(env: Environment, precision: str) -> bool:
    """Whether the model is wrapped in FSDP2: with several processes, and for bf16 on one (its precision policy)."""
    return env.world_size > 1 or precision == "bf16"


def apply_activation_checkpointing(lm: nn.Module) -> None:
    """Each decoder block keeps only its input for the backward pass and recomputes the rest there."""
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def apply_compile(lm: nn.Module) -> None:
    """torch.compile of each decoder block. The blocks share their code and shapes, so Dynamo compiles the first
    and reuses the graph for the others."""
    for layer in lm.model.layers:
        layer.compile()


def apply_fsdp(trained: nn.Module, lm: nn.Module, env: Environment, strategy: str, precision: str) -> None:
    """FSDP2 over all processes: each decoder block its own unit, the rest (embedding tied to the LM head, final
    norm, aggregator) the root's."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
        else MixedPrecisionPolicy()
    reshard = strategy == "fsdp"
    for layer in lm.model.layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(trained, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)


def set_gradient_sync(trained: nn.Module, sync: bool) -> None:
    """Whether this micro-batch's backward pass reduces gradients across processes (FSDP2; no-op otherwise)."""
    if hasattr(trained, "set_requires_gradient_sync"):
        trained.set_requires_gradient_sync(sync)


@torch.no_grad()
@torch.no_grad()
def copy_full(param: nn.Parameter, value: torch.Tensor) -> None:
    """Writes a full (unsharded) value, the same on every process, into a parameter, sharded or not."""
    if isinstance(param, DTensor):
        param.to_local().copy_(
            distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None).to_local())
    else:
        param.copy_(value)


def materialize(trained: nn.Module, lm: nn.Module, device: torch.device, seed: int) -> None:
    """Allocates the (sharded) parameters of a model built on the meta device and initialises them with the
    model's own rules, independently of the number of processes (see the module docstring)."""
    trained.to_empty(device=device)
    done: set[int] = set()
    for name, module in lm.named_modules():
        own = [(key, param) for key, param in module.named_parameters(recurse=False) if id(param) not in done]
        has_buffers = any(True for _ in module.buffers(recurse=False))
        if not own and not has_buffers:
            continue
        generator_seed = int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "big")
        full = {key: torch.empty(param.shape, dtype=param.dtype, device=device) for key, param in own}
        sharded = {key: param for key, param in own}
        for key, tensor in full.items():  # the model's init rules write into full, unsharded tensors
            module._parameters[key] = nn.Parameter(tensor, requires_grad=sharded[key].requires_grad)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(generator_seed)
            lm._init_weights(module)
        for key, param in sharded.items():
            module._parameters[key] = param
            copy_full(param, full[key])
            done.add(id(param))
    lm.tie_weights()
