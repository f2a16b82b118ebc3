"""Measured memory and latency of the model's ``generate``, next to what ``analysis.cost`` predicts.

    python -m analysis.measure                                  # tiny-128 on this machine, P 1-8, batch 1-8
    python -m analysis.measure --size 1.6B --device cuda --input-tokens 64 --output-tokens 64

For each P and batch size the model (random weights, bf16) generates ``--output-tokens`` tokens greedily
after ``--input-tokens`` prompt tokens. Measured: the peak memory of the call, weights included, and its
time per generated token (best of ``--repeats``). Modelled: ``analysis.cost`` for the same shape, with
this device's own matmul throughput and copy bandwidth, measured here, at efficiency 1 (they are
achieved rates, not datasheet peaks).

Peak memory is the allocator's peak on CUDA. On a Linux CPU it is the process's peak resident memory
during the call (the kernel's high-water mark, reset just before, after freed heap is handed back), plus
the weights; other CPUs report none (NaN).

Expect a CPU's measured latency far above the model for small shapes: each decoding step there is mostly
framework overhead (Python, dispatch, generate's bookkeeping), which the model ignores. The comparison is
meant for GPUs at the paper's sizes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models import parscale_config
from models.presets import backbone_of, new_model
from parscale_law.arguments import CommandParser, output_folder, positive_int, positive_ints, stream_counts
from parscale_law.errors import report_error

from .cost import GIB, ModelShape, inference_cost
from .gpus import GPUSpec
from .style import SAVE_DPI, P_colour, P_label, P_marker, new_figure, paper_style

DTYPE = torch.bfloat16  # what the cost model assumes


def device_rates(device: str) -> GPUSpec:
    """This device's achieved bf16 matmul FLOP/s and copy bandwidth, as a spec for ``analysis.cost``."""
    n = 4096 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=DTYPE)
    flops = 2 * n**3 / _best_seconds(lambda: a @ a, device)
    source = torch.empty(64 * 2**20, device=device, dtype=DTYPE)
    target = torch.empty_like(source)
    bandwidth = 2 * source.nbytes / _best_seconds(lambda: target.copy_(source), device)  # read + write
    return GPUSpec(f"{device} (measured)", flops, bandwidth, float("nan"), "measured by analysis.measure.device_rates")


def _best_seconds(work, device: str, repeats: int = 3) -> float:
    work()  # warm-up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        work()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: str):
    """Yields a dict whose ``extra_bytes`` holds, on exit, the peak memory the block added."""
    result = {"extra_bytes": float("nan")}
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["extra_bytes"] = torch.cuda.max_memory_allocated(device) - before
    elif Path("/proc/self/clear_refs").exists():
        # Freed heap handed back first, so that the block's allocations show up as new resident pages.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size to the current one
        before = _proc_status_bytes("VmRSS")
        yield result
        result["extra_bytes"] = _proc_status_bytes("VmHWM") - before
    else:
        yield result


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure(
    size: str = "tiny-128",
    P_values=(1, 2, 4, 8),
    batch_sizes=(1, 2, 4, 8),
    input_tokens: int = 32,
    output_tokens: int = 32,
    device: str = "cpu",
    repeats: int = 3,
    rates: GPUSpec | None = None,
    **overrides,
) -> pd.DataFrame:
    """One row per (P, batch): measured and modelled memory (GiB) and latency per generated token (s).
    ``rates``: the achieved throughput and bandwidth to model with (default: measured now by
    ``device_rates``). ``overrides`` set config fields, e.g. ``num_hidden_layers=2`` for a shallow copy
    of a paper size, or ``backbone="qwen3"`` for another decoder family of the same shape."""
    rates = rates or device_rates(device)
    rows = []
    for P in P_values:
        torch.manual_seed(0)
        config = parscale_config(size, P, **overrides)
        model = new_model(config).to(device=device, dtype=DTYPE).eval()
        weight_bytes = sum(t.nbytes for t in (*model.parameters(), *model.buffers()))
        backbone = backbone_of(config)  # where the vocabulary and special tokens are, for any family
        settings = {
            "max_new_tokens": output_tokens, "min_new_tokens": output_tokens, "do_sample": False,
            "eos_token_id": None, "pad_token_id": backbone.pad_token_id or 0,
        }
        for batch in batch_sizes:
            # Ids below 256 exist in every vocabulary here (the tiny sizes' is bytes plus three specials).
            prompt = torch.randint(0, min(backbone.vocab_size, 256), (batch, input_tokens), device=device)
            with torch.no_grad():
                seconds = _best_seconds(functools.partial(model.generate, prompt, **settings), device, repeats)
                with peak_memory(device) as peak:
                    model.generate(prompt, **settings)
            modelled = inference_cost(
                ModelShape.from_config(config), P, batch, input_tokens, output_tokens, gpu=rates, flop_efficiency=1.0,
                memory_efficiency=1.0
            )
            rows.append(
                {
                    "size": size, "P": P, "batch": batch, "device": device,
                    "measured_memory_gb": (weight_bytes + peak["extra_bytes"]) / GIB,
                    "modelled_memory_gb": modelled.memory_gb,
                    "measured_latency_per_token_s": seconds / output_tokens,
                    "modelled_latency_per_token_s": modelled.latency_s / output_tokens,
                }
            )
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame):
    """Measured against modelled memory and per-token latency (log axes), one colour per P, marker size
    growing with the batch; the dashed line is measured = modelled."""
    all_P = sorted(frame["P"].unique())
    with paper_style():
        figure, axes = new_figure(ncols=2)
        for ax, quantity, unit in zip(axes, ("memory_gb", "latency_per_token_s"), ("GiB", "s per token"), strict=True):
            for P in all_P:
                rows = frame[frame["P"] == P]
                ax.scatter(
                    rows[f"modelled_{quantity}"], rows[f"measured_{quantity}"], s=15 * (1 + np.log2(rows["batch"])),
                    marker=P_marker(P), color=P_colour(P, all_P), edgecolor="black", linewidth=0.5, label=P_label(P),
                    zorder=3, gid=f"{quantity} P={P:g}",
                )
            values = frame[[f"modelled_{quantity}", f"measured_{quantity}"]].to_numpy().ravel()
            values = values[np.isfinite(values)]
            span = np.array([values.min() / 1.5, values.max() * 1.5])
            ax.plot(span, span, color="black", lw=0.8, ls="--", label="measured = modelled")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"Modelled ({unit})")
            ax.set_ylabel(f"Measured ({unit})")
            ax.set_title("Peak memory" if quantity == "memory_gb" else "Latency per generated token", fontsize=8)
        axes[0].legend(loc="upper left", fontsize=6)
        size, device = frame["size"].iloc[0], frame["device"].iloc[0]
        figure.suptitle(f"{size} on {device}: marker size grows with batch "
                        f"({', '.join(map(str, sorted(frame['batch'].unique())))})", fontsize=8)
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m analysis.measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny-128",
                        help="a models size: tiny-32 ... tiny-128, 0.5B ... 4.4B (default tiny-128)")
    parser.add_argument("--layers", type=positive_int,
                        help="override the depth, e.g. 2 for a shallow copy of a paper size on a CPU")
    parser.add_argument("--P", default=[1, 2, 4, 8], type=stream_counts,
                        help="comma-separated stream counts (default 1,2,4,8)")
    parser.add_argument("--batch", default=[1, 2, 4, 8], type=positive_ints,
                        help="comma-separated batch sizes (default 1,2,4,8)")
    parser.add_argument("--input-tokens", type=positive_int, default=32)
    parser.add_argument("--output-tokens", type=positive_int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed runs per setting; the fastest counts")
    parser.add_argument("--out", type=output_folder, default=Path("outputs/measure"),
                        help="folder for measured.csv and the plot")
    args = parser.parse_args(argv)
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    try:
        frame = measure(
            args.size, args.P, args.batch,
            args.input_tokens, args.output_tokens, args.device, args.repeats, **overrides,
        )
    except ValueError as error:  # unknown size, bad P: one line, what to change
        return report_error(error)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out / "measured.csv", index=False)
    plot(frame).savefig(args.out / "measured_vs_modelled.png", dpi=SAVE_DPI)
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"modelled: analysis.cost with {args.device}'s own matmul and copy rates measured here (not a datasheet "
          "GPU's)" + ("; on a CPU, framework overhead dominates small shapes, so compare the trend with P and batch, "
                      "not the values" if args.device == "cpu" else ""))
    print(f"wrote {args.out / 'measured.csv'} and {args.out / 'measured_vs_modelled.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
