"""`python -m benchmarks.data_path [--tokens N] [--workers W]`: the data path, measured side by side in one run.

1. Tokenizing N tokens (default 10M) of a local corpus (the standard library's Python sources as a JSON-lines
   file) inline, the way an unprepared run does it (`StreamedRows`: document by document in the training
   process), against `sweeps.prepare` (batched, `--workers` processes, default one per core this process
   may use), for the byte vocabulary of the tiny sizes and a BPE of 8k tokens trained here on the corpus.
2. The time to the first batch of a run resumed at 1% and at 90% of a prepared corpus (opening it and
   reading one global batch of 16 x 2048 tokens by position), the median of 5.

Pin it to the cores it may use (e.g. `taskset -c 0`): a machine shared with other jobs gives noisy absolute
numbers; the ratios are what it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from sweeps.data.batches import PreparedRows, StreamedRows
from sweeps.data.config import DataConfig
from sweeps.data.documents import StdlibDocuments, load_tokenizer
from sweeps.data.preparation import cores, prepare
from sweeps.data.prepared import read_manifest


def write_corpus(directory: Path, text_bytes: int) -> str:
    """The standard library's Python sources, one JSON line per file, up to `text_bytes` of text."""
    path, size = directory / "stdlib-code.jsonl", 0
    with open(path, "w") as handle:
        for text in StdlibDocuments("stdlib-code", None, 0.02):
            handle.write(json.dumps({"text": text}) + "\n")
            size += len(text)
            if size >= text_bytes:
                break
    return str(path)


def train_bpe(directory: Path, corpus: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8000, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with open(corpus) as handle:
        texts = [json.loads(line)["text"] for _, line in zip(range(300), handle, strict=False)]
    backend.train_from_iterator(texts, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>").save_pretrained(directory / "bpe")
    return str(directory / "bpe")


def inline_seconds(data: DataConfig, tokens: int, seq_len: int = 2048, batch: int = 16) -> float:
    rows = StreamedRows(data, load_tokenizer(data), seq_len, batch)
    start = time.perf_counter()
    for step in range(tokens // (seq_len * batch)):
        rows.batch(step, 0, batch)
    return time.perf_counter() - start


def first_batch_seconds(data: DataConfig, fraction: float, seq_len: int = 2048, batch: int = 16) -> float:
    tokenizer = load_tokenizer(data)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        rows = PreparedRows(Path(data.prepared), data, tokenizer, seq_len, batch, seed=0)
        rows.batch(int(fraction * rows.order.n) // batch, 0, batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_path", description=__doc__)
    parser.add_argument("--tokens", type=float, default=10e6)
    parser.add_argument("--workers", type=int, default=cores())
    args = parser.parse_args(argv)
    tokens = int(args.tokens)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # inline and in the workers alike: one thread per process
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print(f"{tokens / 1e6:.0f}M tokens of the standard library's Python sources; {args.workers} worker(s)")
        print(f"{'vocabulary':<12} {'inline tok/s':>13} {'prepared tok/s':>15} {'speed-up':>9}")
        for name in ("bytes", "bpe-8k"):
            text_bytes = tokens if name == "bytes" else 4 * tokens  # BPE: ~3 bytes of code per token, and margin
            corpus = write_corpus(scratch, text_bytes)
            tokenizer = "bytes" if name == "bytes" else train_bpe(scratch, corpus)
            data = DataConfig(name="stdlib-code-jsonl", source="hub", path="json", data_files=[corpus],
                              holdout_fraction=0.001, tokenizer=tokenizer)
            inline = inline_seconds(data, tokens)
            start = time.perf_counter()
            manifest = prepare(data, scratch / name, workers=args.workers, report=lambda progress, line: None)
            prepared_s = time.perf_counter() - start
            prepared_tokens = sum(split["tokens"] for split in manifest["splits"].values())
            inline_rate, prepared_rate = tokens / inline, prepared_tokens / prepared_s
            print(f"{name:<12} {inline_rate:>13,.0f} {prepared_rate:>15,.0f} {prepared_rate / inline_rate:>8.1f}x")
        data = DataConfig(name="stdlib-code-jsonl", source="hub", path="json", data_files=[corpus],
                          holdout_fraction=0.001, tokenizer=tokenizer, prepared=str(scratch / "bpe-8k"))
        rows = read_manifest(scratch / "bpe-8k")["splits"]["train"]["tokens"] // 2048
        early, late = first_batch_seconds(data, 0.01), first_batch_seconds(data, 0.90)
        print(f"first batch after a resume ({rows:,} rows of 2048): at 1% {early * 1e3:.2f} ms, at 90% "
              f"{late * 1e3:.2f} ms (ratio {late / early:.2f})")


if __name__ == "__main__":
    main()
