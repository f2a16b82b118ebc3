"""Throughput of ParScale against plain Qwen2 on this machine's CPU: `python -m benchmarks.model_throughput`.

For a tiny and a small shape, measures side by side a training step (forward + backward) and batch-1
greedy decoding, for transformers' Qwen2ForCausalLM (the baseline) and ParScale at each P. Rows are
timed round-robin, repeatedly, and the best round is kept. Time is the process's CPU time, on one thread
by default: unlike wall-clock time it does not count the other jobs of a shared machine (`--threads`
uses more; CPU time then includes the threads' waiting).

`--baseline REV` adds ParScale at each P as the code of git revision REV builds it (same weights), timed in
the same rounds, to measure a change of the model against the code before it. `--wrapped` adds, the same
way, `ParScaleForCausalLM` around transformers' Qwen2 (the general model; target: its training step within 3%
of Qwen2ParScaleForCausalLM's at P = 1 and 8), and prints their ratio per P.

Columns: tokens/s counts the input tokens (not P times them) per CPU second; "cost" is the time per
token relative to ParScale at P = 1 (targets: Qwen2 within 3% of P = 1, cost at most P); "act MiB" is
the memory autograd keeps for the backward pass (the part of training memory that grows with P; CPUs
have no allocator peak counter); "KV MiB" is the decoding cache at the end of generation.
"""

import argparse
import importlib
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from models.configuration_parscale import ParScaleConfig
from models.modeling_parscale import Qwen2ParScaleForCausalLM
from models.parscale_lm import ParScaleForCausalLM
from models.presets import parscale_config


@dataclass(frozen=True)
class Shape:
    """A benchmarked model shape and its workload."""

    label: str
    size: str  # a parscale_config size
    overrides: dict
    train_batch: int
    train_length: int
    prompt_length: int = 16
    new_tokens: int = 32


DEFAULT_SHAPES = (
    Shape("tiny (tiny-128)", "tiny-128", {}, train_batch=8, train_length=128),
    # The paper's 0.5B layer shape, two layers deep, with the byte vocabulary, to keep CPU runs short.
    Shape("small (0.5B, 2 layers)", "0.5B", {"num_hidden_layers": 2, "vocab_size": 259}, 2, 128),
)


def load_baseline(revision: str):
    """This package as of git revision `revision`, imported as `models_at_<revision>` (its modules only: its
    __init__, which registers the Auto classes, is left out so that the current classes stay registered)."""
    archive = subprocess.run(["git", "archive", revision, "models"], capture_output=True, cwd=Path(__file__).parents[1])
    if archive.returncode != 0:
        raise SystemExit(f"git archive {revision} failed: {archive.stderr.decode().strip()}; "
                         "pass a revision of this repo.")
    name = "models_at_" + "".join(c if c.isalnum() else "_" for c in revision)
    root = Path(tempfile.mkdtemp(prefix="parscale-baseline-"))
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as files:
        files.extractall(root, filter="data")
    (root / "models").rename(root / name)
    (root / name / "__init__.py").write_text("")
    sys.path.insert(0, str(root))
    return importlib.import_module(f"{name}.modeling_parscale"), importlib.import_module(f"{name}.presets")


def build_models(shape: Shape, parscale_ns, baseline=None, wrapped=False) -> dict[str, torch.nn.Module]:
    """Qwen2 and ParScale at each P, all sharing the same backbone weights; with `baseline` (revision,
    (modeling module, presets module)) also ParScale at each P as that revision builds it, same weights;
    with `wrapped`, ParScaleForCausalLM on a Qwen2 backbone at each P, same weights."""
    torch.manual_seed(0)
    base = Qwen2ParScaleForCausalLM(parscale_config(shape.size, 1, **shape.overrides))
    qwen2 = Qwen2ForCausalLM(base.config.to_qwen2_config())
    qwen2.load_state_dict(base.state_dict())
    models = {"Qwen2": qwen2}
    for parscale_n in parscale_ns:
        models[f"P={parscale_n}"] = base if parscale_n == 1 else Qwen2ParScaleForCausalLM.from_qwen2(base, parscale_n)
    if baseline is not None:
        revision, (modeling, presets) = baseline
        for parscale_n in parscale_ns:
            old = modeling.Qwen2ParScaleForCausalLM(presets.parscale_config(shape.size, parscale_n, **shape.overrides))
            old.load_state_dict(models[f"P={parscale_n}"].state_dict())
            models[f"P={parscale_n} @{revision}"] = old
    if wrapped:
        for parscale_n in parscale_ns:
            released = models[f"P={parscale_n}"]
            config = ParScaleConfig(backbone_config=qwen2.config.to_dict(), parscale_n=parscale_n,
                                    parscale_n_tokens=released.config.parscale_n_tokens)  # fmt: skip
            general = ParScaleForCausalLM(config)
            general.load_state_dict(released.state_dict())
            models[f"wrapped P={parscale_n}"] = general
    return models


def train_step_seconds(model, input_ids) -> float:
    model.train()
    model.zero_grad(set_to_none=True)
    start = time.process_time()
    model(input_ids, labels=input_ids, use_cache=False).loss.backward()
    return time.process_time() - start


def saved_activation_bytes(model, input_ids) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass of one training step."""
    storages = {}

    def keep(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(input_ids, labels=input_ids, use_cache=False).loss
    parameters = {param.untyped_storage().data_ptr() for param in model.parameters()}
    del loss
    return sum(nbytes for pointer, nbytes in storages.items() if pointer not in parameters)


def decode_seconds(model, prompt, new_tokens) -> tuple[float, int]:
    """Seconds to greedily generate `new_tokens` tokens at batch 1, and the final KV cache's bytes."""
    model.eval()
    with torch.no_grad():
        start = time.process_time()
        output = model.generate(
            prompt,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            return_dict_in_generate=True,
        )
        seconds = time.process_time() - start
    cache_bytes = sum(
        tensor.numel() * tensor.element_size() for layer in output.cache.layers for tensor in (layer.keys, layer.values)
    )
    return seconds, cache_bytes


def benchmark_shape(shape: Shape, parscale_ns, repeats: int, baseline=None, wrapped=False,
                    decode=True) -> list[dict]:
    models = build_models(shape, parscale_ns, baseline, wrapped)
    input_ids = torch.randint(0, 256, (shape.train_batch, shape.train_length))
    prompt = torch.randint(0, 256, (1, shape.prompt_length))
    train_times = {name: [] for name in models}
    decode_times = {name: [] for name in models}
    cache_bytes = {}
    for round_index in range(repeats + 1):  # round 0 warms up
        for name, model in models.items():
            train_seconds = train_step_seconds(model, input_ids)
            generate_seconds, cache_bytes[name] = decode_seconds(model, prompt, shape.new_tokens) if decode \
                else (float("nan"), 0)
            if round_index > 0:
                train_times[name].append(train_seconds)
                decode_times[name].append(generate_seconds)

    rows = []
    for name, model in models.items():
        rows.append(
            {
                "shape": shape.label,
                "model": name,
                "train_tokens_per_s": input_ids.numel() / min(train_times[name]),
                "activation_mib": saved_activation_bytes(model, input_ids) / 2**20,
                "decode_tokens_per_s": shape.new_tokens / min(decode_times[name]),
                "kv_cache_mib": cache_bytes[name] / 2**20,
            }
        )
    reference = next(row for row in rows if row["model"] == "P=1")
    for row in rows:
        row["train_cost"] = reference["train_tokens_per_s"] / row["train_tokens_per_s"]
        row["decode_cost"] = reference["decode_tokens_per_s"] / row["decode_tokens_per_s"]
    return rows


def format_table(rows: list[dict]) -> str:
    width = max(7, *(len(row["model"]) + 1 for row in rows))
    header = (
        f"{'shape':<24}{'model':<{width}}{'train tok/s':>12}{'cost':>7}{'act MiB':>9}"
        f"{'decode tok/s':>14}{'cost':>7}{'KV MiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['shape']:<24}{row['model']:<{width}}{row['train_tokens_per_s']:>12.0f}{row['train_cost']:>7.2f}"
            f"{row['activation_mib']:>9.1f}{row['decode_tokens_per_s']:>14.1f}{row['decode_cost']:>7.2f}"
            f"{row['kv_cache_mib']:>8.2f}"
        )
    return "\n".join(lines)


def wrapped_ratios(rows: list[dict]) -> str:
    """Training step time of the wrapped Qwen2 over Qwen2ParScaleForCausalLM's, per shape and P."""
    lines = ["training step time, ParScaleForCausalLM(Qwen2) / Qwen2ParScaleForCausalLM:"]
    by_name = {(row["shape"], row["model"]): row for row in rows}
    for (shape, name), row in by_name.items():
        if name.startswith("wrapped "):
            released = by_name[(shape, name.removeprefix("wrapped "))]
            ratio = released["train_tokens_per_s"] / row["train_tokens_per_s"]
            lines.append(f"  {shape:<24}{name.removeprefix('wrapped '):<6}{ratio:.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parscale-n", type=int, nargs="+", default=[1, 2, 4, 8], help="values of P (1 is required)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per row, after one warm-up round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--baseline", metavar="REV", help="also time ParScale as git revision REV builds it")
    parser.add_argument("--wrapped", action="store_true", help="also time ParScaleForCausalLM around Qwen2")
    parser.add_argument("--no-decoding", action="store_true", help="time training steps only (more rounds fit)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if 1 not in args.parscale_n:
        parser.error("--parscale-n must include 1, the reference of the cost columns")

    print(f"CPU time, {args.threads} thread(s), torch {torch.__version__}; best of {args.repeats} rounds")
    baseline = (args.baseline, load_baseline(args.baseline)) if args.baseline else None
    rows = []
    for shape in DEFAULT_SHAPES:
        rows += benchmark_shape(shape, args.parscale_n, args.repeats, baseline, args.wrapped, not args.no_decoding)
    print(format_table(rows))
    if args.wrapped:
        print(wrapped_ratios(rows))


if __name__ == "__main__":
    main()
