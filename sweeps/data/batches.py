"""Training and evaluation rows: documents -> tokens -> rows of `seq_len` tokens, read by global position.

    batches = training_batches(data_config, tokenizer, seq_len, global_batch_size, seed)
    batches.batch(step, offset, size)   # LongTensor (size, seq_len): the rows at global positions
                                        # step * global_batch_size + offset ... + size - 1 of the run's order
    batches.state_dict() / batches.load_state_dict(state)
    eval_batch(data_config, tokenizer, seq_len, n_sequences)   # the held-out rows, the same for every run

A process r of W with A accumulation steps of micro-batch m reads offset (r * A + a) * m, a = 0 ... A - 1, so
the rows of a step never depend on the number of processes or on the micro-batch size.

Where the rows come from (documents and tokenizers: sweeps/data/documents.py):
- Prepared data (`data.prepared=DIR`, written by `python -m sweeps.prepare`; sweeps/data/prepared.py),
  `PreparedRows`: the training split's token file cut into rows, memory-mapped, visited in a seeded order
  that depends on the seed and the corpus only (every P of one seed sees the same rows). Any position is
  read directly: each process reads only its own rows, with no network, and a resume at any step costs the
  same (the state is {}: the position is the step).
- The local corpora (stdlib-code, stdlib-prose) are prepared on first use into a cache (`local_preparation`)
  and then read the same way, so the tiny grid and the tests run the cluster's data path.
- Hub data that is not prepared is streamed, `StreamedRows`: the documents in the source's order, each
  followed by EOS, packed into consecutive rows (the prepared rows in file order), restarted when the
  source ends. Every process reads and tokenizes the whole stream and keeps its own rows, so calls must
  come in order; the state is the stream position at the next step boundary, the same on every process.
  This is for tests and small runs; the paper grid refuses it (sweeps.data.prepared.check_prepared).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sweeps.data.config import DataConfig
from sweeps.data.documents import DataError, load_tokenizer, open_documents
from sweeps.data.preparation import local_preparation
from sweeps.data.prepared import RowOrder, check_source, open_split, read_manifest

__all__ = ["DataError", "PreparedRows", "StreamedRows", "eval_batch", "load_tokenizer", "prepared_directory",
           "training_batches"]


def prepared_directory(data: DataConfig) -> Path | None:
    """Where `data`'s prepared files are: data.prepared, the local corpora's cache, or None (stream it)."""
    if data.prepared:
        return Path(data.prepared)
    if data.source != "hub":
        return local_preparation(data)
    return None


def _checked_manifest(directory: Path, data: DataConfig, tokenizer) -> dict:
    manifest = read_manifest(directory)
    check_source(manifest, data, directory)
    if manifest["tokenizer"]["vocab_hash"] != tokenizer.vocab_hash():
        raise DataError(f"data.prepared={directory} was tokenized with another vocabulary than data.tokenizer="
                        f"{data.tokenizer} loads now (hash {manifest['tokenizer']['vocab_hash']}); prepare it again")
    return manifest


class PreparedRows:
    """Rows of a prepared training split by global position (see the module docstring)."""

    def __init__(self, directory: Path, data: DataConfig, tokenizer, seq_len: int, global_batch_size: int, seed: int):
        manifest = _checked_manifest(directory, data, tokenizer)
        self.tokens, _ = open_split(directory, "train", manifest)
        self.seq_len, self.global_batch_size = seq_len, global_batch_size
        n_rows = len(self.tokens) // seq_len
        if n_rows < global_batch_size:
            raise DataError(
                f"the training split holds {n_rows} rows of {seq_len} tokens, fewer than one global batch of "
                f"{global_batch_size}; lower global_batch_size or seq_len"
            )
        self.order = RowOrder(n_rows, seed)
        self.columns = np.arange(seq_len, dtype=np.int64)

    def batch(self, step: int, offset: int, size: int) -> torch.Tensor:
        _check_slice(offset, size, self.global_batch_size)
        first = step * self.global_batch_size + offset
        rows = self.order(np.arange(first, first + size, dtype=np.int64))
        return torch.from_numpy(self.tokens[rows[:, None] * self.seq_len + self.columns].astype(np.int64))

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise DataError("the checkpoint's data position was written for streamed batches; this run reads "
                            "prepared rows, whose position is the step: start it again in a new run dir")


class StreamedRows:
    """Consecutive rows of a document stream (see the module docstring): position p is the p-th row."""

    def __init__(self, data: DataConfig, tokenizer, seq_len: int, global_batch_size: int):
        self.data, self.tokenizer = data, tokenizer
        self.seq_len, self.global_batch_size = seq_len, global_batch_size
        self.documents, self.stream, self.epoch = open_documents(data, "train"), None, 0
        self.found = False  # whether this epoch's pass has given a document
        self.pending = np.zeros(0, dtype=np.int64)  # tokens read but not yet cut into rows
        self.next_row = 0

    def batch(self, step: int, offset: int, size: int) -> torch.Tensor:
        _check_slice(offset, size, self.global_batch_size)
        first = step * self.global_batch_size + offset
        if first < self.next_row:
            raise DataError(f"streamed data is read in order: row {first} was asked for after row {self.next_row}; "
                            "prepare the data (python -m sweeps.prepare) to read rows in any order")
        self._take(first - self.next_row)
        return torch.from_numpy(self._take(size).reshape(size, self.seq_len))

    def _take(self, rows: int) -> np.ndarray:
        need = rows * self.seq_len
        pieces, have = [self.pending], len(self.pending)
        while have < need:
            ids = self.tokenizer.encode(self._next_text())
            pieces += [np.asarray(ids, dtype=np.int64), np.array([self.tokenizer.eos_token_id])]
            have += len(ids) + 1
        tokens = np.concatenate(pieces) if len(pieces) > 1 else self.pending
        self.pending, self.next_row = tokens[need:], self.next_row + rows
        return tokens[:need]

    def _next_text(self) -> str:
        while True:
            if self.stream is None:
                self.stream = iter(self.documents)
            text = next(self.stream, None)
            if text is not None:
                self.found = True
                return text
            if not self.found:
                raise DataError(f"{self.data.path} split {self.data.train_split!r} gave no train documents")
            self.epoch += 1  # the source ran out: read it again from the top
            self.documents, self.stream, self.found = open_documents(self.data, "train"), None, False

    def state_dict(self) -> dict:
        boundary = -(-self.next_row // self.global_batch_size) * self.global_batch_size
        self._take(boundary - self.next_row)  # every process is then at the same place
        return {"documents": self.documents.state_dict(), "epoch": self.epoch, "next_row": self.next_row,
                "pending": torch.from_numpy(self.pending.astype(np.int32))}

    def load_state_dict(self, state: dict) -> None:
        if "next_row" not in state:
            raise DataError("the checkpoint's data position was written by an older version of this toolkit "
                            "(per-shard streams); start this run again in a new run dir")
        self.documents = open_documents(self.data, "train")
        self.documents.load_state_dict(state["documents"])
        self.stream, self.epoch, self.next_row, self.found = None, int(state["epoch"]), int(state["next_row"]), True
        self.pending = state["pending"].numpy().astype(np.int64)


def _check_slice(offset: int, size: int, global_batch_size: int) -> None:
    if offset < 0 or size < 1 or offset + size > global_batch_size:
        raise ValueError(f"rows {offset} ... {offset + size - 1} are not within a batch of {global_batch_size}")


def training_batches(data: DataConfig, tokenizer, seq_len: int, global_batch_size: int, seed: int):
    """The run's training rows: `PreparedRows` when the data is prepared (or local), else `StreamedRows`."""
    directory = prepared_directory(data)
    if directory is not None:
        return PreparedRows(directory, data, tokenizer, seq_len, global_batch_size, seed)
    return StreamedRows(data, tokenizer, seq_len, global_batch_size)


def eval_batch(data: DataConfig, tokenizer, seq_len: int, n_sequences: int) -> torch.Tensor:
    """The held-out set: the first n_sequences rows of the validation documents in the source's order,
    independent of the run's seed, so every run of a grid is measured on the same tokens."""
    need = n_sequences * seq_len
    directory = prepared_directory(data)
    if directory is not None:
        tokens, _ = open_split(directory, "validation", _checked_manifest(directory, data, tokenizer))
        tokens = np.asarray(tokens[:need], dtype=np.int64)
    else:
        pieces, have = [], 0
        for text in open_documents(data, "validation"):
            ids = tokenizer.encode(text)
            pieces += [np.asarray(ids, dtype=np.int64), np.array([tokenizer.eos_token_id])]
            have += len(ids) + 1
            if have >= need:
                break
        tokens = np.concatenate(pieces)[:need] if pieces else np.zeros(0, dtype=np.int64)
    if len(tokens) < need:
        raise DataError(f"the validation documents of data={data.name} hold fewer than {need} tokens; lower "
                        "eval_sequences or raise data.holdout_fraction")
    return torch.from_numpy(tokens).view(n_sequences, seq_len)
