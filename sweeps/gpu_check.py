"""The paper's cells on one real GPU: do they fit where the plan says, how fast do they train, and how fast
does the model decode?

    python -m sweeps.gpu_check [--gpu H200-141GB] [--cells 0.5B-P1,4.4B-P8] [--budget-s 420] [--out DIR]
    python -m sweeps.gpu_check --tiny --out DIR          # the same on CPU with the tiny sizes (the test)
    python -m sweeps.gpu_check --backbone qwen3          # training on another decoder family of these shapes

(a) Training: each of the 24 paper cells (36 layers, real widths and vocabulary, sequence 2048, bf16 FSDP2
mixed precision, compiled blocks) at the micro-batch the planner gives it on one GPU of this kind: three
optimiser steps of one micro-batch each (random tokens: speed and memory do not depend on the text). Reported:
the measured peak memory (reserved and allocated) against the plan's prediction, tokens/s and MFU of the
steps after the first (which compiles), and against the plain backbone (transformers' own Qwen2, or the
--backbone family's model) at the same settings for P = 1 cells.
(b) Decoding: the 1.6B model at batch 1, 64 prompt + 64 new tokens with the KV cache, P = 1, 2, 4, 8 (the
paper's Figure 4 setting): latency and peak memory against the inference-cost model (analysis/cost.py).
The cells run largest-first within --budget-s; cells that did not start in time are listed as skipped.
Writes gpu_check.json (every number) and gpu_check.md (the tables)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from analysis.gpus import gpu_name
from models.sizes import PAPER_P_VALUES, PAPER_SIZES, TINY_SIZES
from parscale_law.arguments import CommandParser, output_folder, positive_float, positive_int
from sweeps.grid import resources
from sweeps.grid.resource_plan import Hardware, plan_resources
from sweeps.run import distributed
from sweeps.run.build import build_optimizer, build_trained, model_config
from sweeps.run.config import load_config

STEPS = 3


def cell_config(size: str, parscale_n: int, seq_len: int, run_dir: Path, tiny: bool, backbone: str):
    overrides = [f"model={size}", f"model.backbone={backbone}", f"parscale_n={parscale_n}", f"seq_len={seq_len}",
                 "global_batch_size=1024", "micro_batch_size=1", "precision=bf16", f"run_dir={run_dir}",
                 "tokens=1000000000000"]
    if tiny:
        overrides += ["global_batch_size=16"]
    return load_config(overrides)


def train_cell(size: str, parscale_n: int, hardware: Hardware, env, seq_len: int, tiny: bool, compile_blocks: bool,
               out: Path, backbone: str, plain: bool = False) -> dict:
    """Three optimiser steps of one cell at its planned micro-batch on this device."""
    config = cell_config(size, parscale_n, seq_len, out / "runs" / f"{size}-P{parscale_n}", tiny, backbone)
    plan = plan_resources(f"{size}-P{parscale_n}", config, hardware)
    config.micro_batch_size = plan.micro_batch_size
    config.activation_checkpointing = plan.activation_checkpointing
    shape = resources.shape_of_model(config.model, parscale_n)
    layout = resources.Layout(seq_len, plan.micro_batch_size, plan.micro_batch_size, 1, plan.activation_checkpointing,
                              plan.strategy, "bf16", config.loss_chunk_tokens)
    predicted = resources.memory(size, shape, layout)
    built = model_config(config, config.model["vocab_size"])
    model_class = None
    if plain:  # transformers' own model of the family and shape, for the P = 1 comparison
        from transformers import AutoModelForCausalLM

        from models import Qwen2ParScaleConfig
        from models.presets import backbone_of

        built = built.to_qwen2_config() if isinstance(built, Qwen2ParScaleConfig) else backbone_of(built)
        built._attn_implementation = config.attn_implementation
        model_class = AutoModelForCausalLM.from_config
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(env.device)
    started = time.perf_counter()
    trained, lm = build_trained(config, built, env, plan.strategy, compile_blocks, model_class)
    optimizer = build_optimizer(trained, config.optim, fused=env.device.type == "cuda")
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(STEPS):
        ids = torch.randint(0, 151_000 if not tiny else 256, (plan.micro_batch_size, seq_len), generator=generator)
        ids = ids.to(env.device)
        _synchronize(env)
        begin = time.perf_counter()
        loss = trained(ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _synchronize(env)
        times.append(time.perf_counter() - begin)
    step_s = sum(times[1:]) / (STEPS - 1)
    tokens = plan.micro_batch_size * seq_len
    flops = resources.model_flops_per_token(shape, seq_len) * tokens
    row = {
        "cell": f"{size}-P{parscale_n}" + (f" ({type(lm).__name__.removesuffix('ForCausalLM')})" if plain else ""),
        "size": size, "P": parscale_n, "backbone": backbone,
        "micro_batch_size": plan.micro_batch_size, "activation_checkpointing": plan.activation_checkpointing,
        "strategy": plan.strategy, "compiled": compile_blocks, "predicted_peak_gb": predicted.peak / 1e9,
        "predicted_gib": predicted.gib(), "first_step_s": times[0], "step_s": step_s, "tokens_per_s": tokens / step_s,
        "mfu": flops / step_s / hardware.peak_flops, "loss": float(loss.item()),
        "wall_s": time.perf_counter() - started,
    }
    if env.device.type == "cuda":
        row["measured_peak_reserved_gb"] = torch.cuda.max_memory_reserved(env.device) / 1e9
        row["measured_peak_allocated_gb"] = torch.cuda.max_memory_allocated(env.device) / 1e9
        row["prediction_error"] = row["predicted_peak_gb"] / row["measured_peak_reserved_gb"] - 1
    del trained, lm, optimizer
    return row


def _synchronize(env) -> None:
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)


def decode_rows(env, tiny: bool) -> list[dict]:
    """Batch-1 decoding of 1.6B (tiny-128 with --tiny) at P = 1, 2, 4, 8, dynamic cache eager and static cache
    compiled, against the inference-cost model."""
    from dataclasses import asdict

    from models import Qwen2ParScaleForCausalLM, parscale_config
    from models.decode_timing import MODES, measure_decoding

    size = "tiny-128" if tiny else "1.6B"
    rows = []
    for parscale_n in PAPER_P_VALUES:
        torch.manual_seed(0)
        model = Qwen2ParScaleForCausalLM(parscale_config(size, parscale_n=parscale_n)).to(env.device, torch.bfloat16)
        row = {"size": size, "P": parscale_n}
        for mode in MODES:
            row[mode] = asdict(measure_decoding(model, mode, prompt_length=64, new_tokens=64,
                                                repeats=1 if tiny else 3))
        row["speedup"] = row["dynamic-eager"]["latency_s"] / row["static-compiled"]["latency_s"]
        if not tiny:
            from analysis.cost import inference_cost

            modelled = inference_cost("1.6B", parscale_n, batch=1, input_tokens=64, output_tokens=64, gpu=_gpu_name())
            row.update(modelled_latency_s=modelled.latency_s, modelled_memory_gb=modelled.memory_gb)
        rows.append(row)
        del model
    return rows


def backbone_name(text: str) -> str:
    """--backbone: a transformers decoder family (argparse reports the ValueError's message in one line)."""
    from models.presets import DEFAULT_BACKBONE, backbone_config_class

    if text != DEFAULT_BACKBONE:
        try:
            backbone_config_class(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None
    return text


def _gpu_name() -> str:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    for known in ("H200", "H100", "A100"):
        if known in name:
            return {"H200": "H200-141GB", "H100": "H100-80GB", "A100": "A100-80GB"}[known]
    return "H100-80GB"


def markdown(result: dict) -> str:
    lines = [f"# GPU check on {result['device']}", "",
             "| cell | micro-batch | act. ckpt | predicted GB | measured GB (reserved) | error | tokens/s | MFU |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["training"]:
        measured = row.get("measured_peak_reserved_gb")
        lines.append(
            f"| {row['cell']} | {row['micro_batch_size']} | {'yes' if row['activation_checkpointing'] else 'no'} | "
            f"{row['predicted_peak_gb']:.1f} | {'-' if measured is None else f'{measured:.1f}'} | "
            f"{'-' if measured is None else format(row['prediction_error'], '+.1%')} | {row['tokens_per_s']:,.0f} | "
            f"{row['mfu']:.1%} |")
    if result["skipped"]:
        lines += ["", f"Not run within the time budget: {', '.join(result['skipped'])}."]
    lines += ["", "| decoding | P | mode | latency s | tokens/s | peak GB | modelled s | modelled GB |",
              "|---|---|---|---|---|---|---|---|"]
    for row in result["decoding"]:
        for mode in ("dynamic-eager", "static-compiled"):
            numbers = row[mode]
            peak = numbers["peak_memory_bytes"]
            lines.append(
                f"| {row['size']} | {row['P']} | {mode} | {numbers['latency_s']:.3f} | "
                f"{numbers['tokens_per_s']:,.1f} | {'-' if peak is None else f'{peak / 1e9:.2f}'} | "
                f"{row.get('modelled_latency_s', float('nan')):.3f} | "
                f"{row.get('modelled_memory_gb', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m sweeps.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", default=None, type=gpu_name,
                        help="the GPU's name for the planner (default: from the device)")
    parser.add_argument("--cells", default="all", help="comma-separated SIZE-PN, e.g. 0.5B-P1,4.4B-P8")
    parser.add_argument("--budget-s", type=positive_float, default=420.0)
    parser.add_argument("--seq-len", type=positive_int, default=2048)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on this machine (a check of the check)")
    parser.add_argument("--backbone", default="qwen2", type=backbone_name,
                        help="the decoder family, a transformers model_type (default: qwen2, the released layout)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-decoding", action="store_true")
    parser.add_argument("--out", type=output_folder, default=Path("gpu_check"))
    args = parser.parse_args(argv)
    sizes = TINY_SIZES if args.tiny else PAPER_SIZES
    cells = [(size, p) for size in sizes for p in PAPER_P_VALUES]
    if args.cells != "all":
        wanted = set(args.cells.split(","))
        unknown = sorted(wanted - {f"{size}-P{p}" for size, p in cells})
        if unknown:
            parser.error(f"argument --cells: unknown cell(s) {', '.join(unknown)}; choose among "
                         f"{cells[0][0]}-P{cells[0][1]} ... {cells[-1][0]}-P{cells[-1][1]} (sizes {', '.join(sizes)}; "
                         f"P {', '.join(map(str, PAPER_P_VALUES))})")
        cells = [(size, p) for size, p in cells if f"{size}-P{p}" in wanted]
    args.out.mkdir(parents=True, exist_ok=True)

    env = distributed.init(single_process_group=True)
    cells.sort(key=lambda cell: (cell[0] not in ("0.5B", "4.4B"),
                                 -resources.shape_of(*cell, (("backbone", args.backbone),)).total_params * cell[1]))
    seq_len = 64 if args.tiny else args.seq_len
    settings = {"gpu": args.gpu or _gpu_name(), "gpus_per_node": 1, "max_nodes": 1, "mfu": 0.4,
                "target_hours": 1e9, "startup_min": 0, "checkpoint_write_gbps": 1.0, "filesystem_gbps": 20.0,
                "gpu_mem_gb": None if env.device.type == "cuda" else 64}
    hardware = Hardware.from_settings(settings, timeout_min=1e9)
    compile_blocks = env.device.type == "cuda" and not args.no_compile
    started = time.perf_counter()
    training, skipped = [], []
    for size, parscale_n in cells:
        if time.perf_counter() - started > args.budget_s:
            skipped.append(f"{size}-P{parscale_n}")
            continue
        row = train_cell(size, parscale_n, hardware, env, seq_len, args.tiny, compile_blocks, args.out, args.backbone)
        training.append(row)
        print(json.dumps(row), flush=True)
        if parscale_n == 1 and size in ("0.5B", "tiny-128"):
            plain = train_cell(size, 1, hardware, env, seq_len, args.tiny, compile_blocks, args.out, args.backbone,
                               plain=True)
            plain["ratio_to_parscale_p1"] = row["step_s"] / plain["step_s"]
            training.append(plain)
    # Decoding is timed on the released layout only (models/decode_timing.py reads its flat config).
    decoding = [] if args.no_decoding or args.backbone != "qwen2" else decode_rows(env, args.tiny)
    result = {"device": torch.cuda.get_device_name() if env.device.type == "cuda" else "cpu",
              "torch": torch.__version__, "gpu": settings["gpu"], "training": training, "skipped": skipped,
              "decoding": decoding, "wall_s": time.perf_counter() - started}
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
