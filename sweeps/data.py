"""Training and evaluation data: documents -> tokens -> sequences of `seq_len` tokens.

Sources (`source` in conf/data/*.yaml):
- hub: Hugging Face `datasets` in streaming mode. `path` is a hub name (The Pile, the Stack) or a builder
  such as "json" / "text" with local `data_files`; both go through the same `load_dataset(..., streaming=True)`.
- stdlib-code: the Python sources of the running interpreter's standard library, one document per file.
- stdlib-prose: English from the standard library's documentation: the pydoc topics, and per module file
  its docstrings (read with `ast`, nothing imported; cached per Python build, see `prose_cache_path`).

Split: a data set with an `eval_split` uses it; otherwise a document is held out when the hash of its text
falls in the first `holdout_fraction` of the hash range, so train and validation never share a document
(identical texts land on the same side) and the split never depends on the seed or the order.

Batches: a global batch of G sequences is made of S = G / micro_batch_size micro-batches ("shards"); process
r of W trains on shards r*A ... r*A+A-1 (A = S / W accumulation steps). The batches depend on G and the micro
batch only: one process accumulating two micro-batches sees exactly the data of two processes.
- Streamed (hub) data, `StreamedBatches`: training documents are dealt round-robin to the S shards; document
  i feeds shard i mod S, which packs its own sequences (each document's tokens, then EOS, cut into rows), so
  no two processes share a document. Every process reads the whole document stream (cheap: raw text) and
  tokenizes only its own shards' documents. At the paper's batch (1024 rows) a batch spans many documents.
- Local (stdlib) data, `ShuffledRows`: the whole training split is small enough to hold in memory, so it is
  tokenized once, cut into rows, and every epoch visits the rows in a new seeded order. Packing it like a
  stream would make each small batch a few thousand consecutive tokens of one or two files, and a tiny
  model's loss would then follow whichever file it happens to be reading rather than its size.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import random
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import torch

from models.sizes import BYTE_EOS_ID, BYTE_VOCAB_SIZE

from .config import ConfigError, DataConfig


class DataError(ConfigError):
    """The data cannot be read as configured (missing field, empty split)."""


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255 and EOS = 258: the vocabulary of the tiny model sizes. Needs no files."""

    vocab_size = BYTE_VOCAB_SIZE
    eos_token_id = BYTE_EOS_ID

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


class PretrainedTokenizer:
    """A `transformers.AutoTokenizer` by hub name (e.g. Qwen/Qwen2.5-0.5B, the paper's) or local directory."""

    def __init__(self, name: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name)
        # Documents are split into training rows here, so the tokenizer's own length limit does not apply.
        self.tokenizer.model_max_length = 2**62
        self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise DataError(f"tokenizer {name} has no eos_token; choose a tokenizer with one (documents end with it)")
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)


def load_tokenizer(data: DataConfig):
    return ByteTokenizer() if data.tokenizer == "bytes" else PretrainedTokenizer(data.tokenizer)


def split_of(text: str, holdout_fraction: float) -> str:
    """"validation" for the documents whose text hashes into the first holdout_fraction, else "train"."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") < holdout_fraction * 2**64 else "train"


@functools.lru_cache(maxsize=1)
def stdlib_files() -> tuple[Path, ...]:
    """The standard library's .py files (third-party packages installed beside it excluded), sorted."""
    files = []
    for directory, subdirectories, names in os.walk(sysconfig.get_paths()["stdlib"]):
        subdirectories[:] = [name for name in subdirectories if name not in ("site-packages", "dist-packages")]
        files += [Path(directory, name) for name in names if name.endswith(".py")]
    return tuple(sorted(files))


def _docstrings(path: Path) -> str:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):  # the test suite holds deliberately broken files
        return ""
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    texts = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, kinds))
    return "\n\n".join(text for text in texts if text)


def prose_cache_path() -> Path:
    """Where the standard library's docstrings are cached: parsing every module takes ~10 s, which each cell of
    a tiny grid would otherwise pay. Keyed by the Python build and its stdlib location; delete it at will."""
    key = hashlib.blake2b(f"{sys.version}|{sysconfig.get_paths()['stdlib']}".encode(), digest_size=6).hexdigest()
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache_home / "parscale" / f"stdlib-prose-{key}.json"


@functools.lru_cache(maxsize=1)
def stdlib_docstrings() -> dict[str, str]:
    """{path of a stdlib .py file: its docstrings}, from the cache or parsed (then cached) here."""
    path = prose_cache_path()
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    docstrings = {str(file): _docstrings(file) for file in stdlib_files()}
    temporary = None
    try:  # atomic: the cells of a grid start together and may all write it
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
            temporary = handle.name
            json.dump(docstrings, handle)
        os.replace(temporary, path)
    except OSError:  # a read-only or full disk only costs the parse next time
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return docstrings


class StdlibDocuments:
    """The standard library as a document stream, in a seeded order that changes every epoch, forever."""

    def __init__(self, kind: str, split: str, seed: int, holdout_fraction: float):
        self.kind, self.split, self.seed, self.holdout_fraction = kind, split, seed, holdout_fraction
        if kind == "stdlib-code":
            self.entries = list(stdlib_files())
        else:
            from pydoc_data.topics import topics

            self.entries = [topics[key] for key in sorted(topics)] + list(stdlib_files())
        self.epoch, self.position = 0, 0  # the next entry is this epoch's order[position]

    def _text(self, entry) -> str:
        if isinstance(entry, str):  # a pydoc topic
            return entry
        if self.kind == "stdlib-code":
            return entry.read_bytes().decode("utf-8", errors="replace")
        cached = stdlib_docstrings().get(str(entry))  # a file added since the cache was written is parsed here
        return _docstrings(entry) if cached is None else cached

    def in_order(self):
        """This split's documents once, in the fixed order of the entries (independent of the seed)."""
        for entry in self.entries:
            text = self._text(entry)
            if text and split_of(text, self.holdout_fraction) == self.split:
                yield text

    def __iter__(self):
        while True:
            order = list(range(len(self.entries)))
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
            found = False
            while self.position < len(order):
                text = self._text(self.entries[order[self.position]])
                self.position += 1
                if text and split_of(text, self.holdout_fraction) == self.split:
                    found = True
                    yield text
            if not found:
                raise DataError(f"{self.kind} has no {self.split} documents; raise data.holdout_fraction")
            self.epoch, self.position = self.epoch + 1, 0


class HubDocuments:
    """A `datasets` streaming split as a document stream, restarted from the top when it runs out. Its
    position is the `IterableDataset.state_dict()` (shard and example index), so resuming skips nothing and
    repeats nothing without reading the stream again. Documents are taken in the files' order: The Pile's
    files are already shuffled, and a shuffle buffer would be lost on resume."""

    def __init__(self, data: DataConfig, split: str):
        self.data, self.split = data, split
        self.hub_split = data.eval_split if split == "validation" and data.eval_split else data.train_split
        self.holdout = data.eval_split is None
        self.epoch, self.dataset, self.resume_state = 0, None, None

    def _open(self):
        import datasets

        data = self.data
        return datasets.load_dataset(
            data.path, name=data.config_name, data_dir=data.data_dir, data_files=data.data_files,
            split=self.hub_split, streaming=True,
        )

    def __iter__(self):
        while True:
            self.dataset = self._open()
            if self.resume_state is not None:
                self.dataset.load_state_dict(self.resume_state)
                self.resume_state = None
            found = False
            for example in self.dataset:
                if self.data.text_field not in example:
                    raise DataError(
                        f"data.text_field={self.data.text_field!r} is not a field of {self.data.path}; "
                        f"it has {sorted(example)}"
                    )
                text = example[self.data.text_field]
                if text and (not self.holdout or split_of(text, self.data.holdout_fraction) == self.split):
                    found = True
                    yield text
            if not found and self.epoch == 0:
                raise DataError(f"{self.data.path} split {self.hub_split!r} gave no {self.split} documents")
            self.epoch += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "stream": self.dataset.state_dict() if self.dataset is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.resume_state = state["epoch"], state["stream"]


def open_documents(data: DataConfig, split: str, seed: int):
    if data.source == "hub":
        return HubDocuments(data, split)
    return StdlibDocuments(data.source, split, seed, data.holdout_fraction)


class StreamedBatches:
    """The training micro-batches of one process: `next(shard)` is the next (micro_batch_size, seq_len)
    batch of one of its shards (see the module docstring). The state is the stream position, the count of
    documents dealt, and each shard's tokens not yet used."""

    positional = False  # the position is state, kept per process

    def __init__(self, documents, tokenizer, seq_len: int, micro_batch_size: int, num_shards: int, shards: range):
        self.documents, self.tokenizer = documents, tokenizer
        self.seq_len, self.micro_batch_size, self.num_shards = seq_len, micro_batch_size, num_shards
        self.pending = {shard: [] for shard in shards}
        self.dealt = 0
        self.stream = None  # created on first use, after a possible load_state_dict

    def next(self, shard: int) -> torch.Tensor:
        if self.stream is None:
            self.stream = iter(self.documents)
        need = self.micro_batch_size * self.seq_len
        tokens = self.pending[shard]
        while len(tokens) < need:
            text = next(self.stream)
            owner = self.dealt % self.num_shards
            self.dealt += 1
            if owner in self.pending:
                self.pending[owner] += self.tokenizer.encode(text)
                self.pending[owner].append(self.tokenizer.eos_token_id)
        batch = torch.tensor(tokens[:need], dtype=torch.long).view(self.micro_batch_size, self.seq_len)
        del tokens[:need]
        return batch

    def state_dict(self) -> dict:
        return {
            "documents": self.documents.state_dict(),
            "dealt": self.dealt,
            "pending": {str(shard): torch.tensor(tokens, dtype=torch.int32) for shard, tokens in self.pending.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if set(state["pending"]) != {str(shard) for shard in self.pending}:
            raise DataError(
                "the checkpoint's data shards differ from this process's; resume with the same number of "
                "processes, global_batch_size and micro_batch_size"
            )
        self.documents.load_state_dict(state["documents"])
        self.dealt = state["dealt"]
        self.pending = {int(shard): tokens.tolist() for shard, tokens in state["pending"].items()}
        self.stream = None


class ShuffledRows:
    """The training micro-batches of one process for a local corpus held in memory: `rows` (n, seq_len) are
    visited in a new seeded order every epoch, and micro-batch k of shard s holds the rows at positions
    (k * S + s) * micro_batch_size ... of that endless order, so any split of the shards over processes
    sees the same rows. The state is the count of micro-batches each shard has drawn."""

    positional = False

    def __init__(self, rows: torch.Tensor, micro_batch_size: int, num_shards: int, shards: range, seed: int):
        if rows.shape[0] < micro_batch_size * num_shards:
            raise DataError(
                f"the training split holds {rows.shape[0]} rows, fewer than one global batch of "
                f"{micro_batch_size * num_shards}; lower global_batch_size or seq_len"
            )
        self.rows, self.micro_batch_size, self.num_shards, self.seed = rows, micro_batch_size, num_shards, seed
        self.drawn = {shard: 0 for shard in shards}
        self.orders: dict[int, np.ndarray] = {}  # epoch -> row order; two at most (shards cross epochs apart)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self.orders:
            self.orders = {e: order for e, order in self.orders.items() if e == epoch - 1}
            self.orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.rows.shape[0])
        return self.orders[epoch]

    def next(self, shard: int) -> torch.Tensor:
        first = (self.drawn[shard] * self.num_shards + shard) * self.micro_batch_size
        self.drawn[shard] += 1
        n = self.rows.shape[0]
        index = [self._order(position // n)[position % n] for position in range(first, first + self.micro_batch_size)]
        return self.rows[torch.as_tensor(np.array(index))].long()

    def state_dict(self) -> dict:
        return {"drawn": {str(shard): count for shard, count in self.drawn.items()}}

    def load_state_dict(self, state: dict) -> None:
        if "drawn" not in state:
            raise DataError(
                "the checkpoint's data position was written for streamed batches (an older version of this "
                "toolkit packed the local corpora as a stream); start this run again in a new run dir"
            )
        if set(state["drawn"]) != {str(shard) for shard in self.drawn}:
            raise DataError(
                "the checkpoint's data shards differ from this process's; resume with the same number of "
                "processes, global_batch_size and micro_batch_size"
            )
        self.drawn = {int(shard): int(count) for shard, count in state["drawn"].items()}


def local_training_rows(data: DataConfig, tokenizer, seq_len: int) -> torch.Tensor:
    """A local source's training split as (rows, seq_len) token ids: its documents in their fixed order, each
    followed by EOS, cut into rows (the last partial row dropped)."""
    documents = StdlibDocuments(data.source, "train", seed=0, holdout_fraction=data.holdout_fraction)
    pieces = [np.asarray([*tokenizer.encode(text), tokenizer.eos_token_id], dtype=np.int32)
              for text in documents.in_order()]
    if not pieces:
        raise DataError(f"{data.source} has no train documents; lower data.holdout_fraction")
    tokens = np.concatenate(pieces)
    n_rows = len(tokens) // seq_len
    return torch.from_numpy(tokens[: n_rows * seq_len]).view(n_rows, seq_len)


def training_batches(data: DataConfig, tokenizer, seq_len: int, micro_batch_size: int, num_shards: int,
                     shards: range, seed: int):
    """This process's training batches (see the module docstring): `next(shard)`, `state_dict()`,
    `load_state_dict()`."""
    if data.source == "hub":
        documents = open_documents(data, "train", seed)
        return StreamedBatches(documents, tokenizer, seq_len, micro_batch_size, num_shards, shards)
    rows = local_training_rows(data, tokenizer, seq_len)
    return ShuffledRows(rows, micro_batch_size, num_shards, shards, seed)


def eval_batch(data: DataConfig, tokenizer, seq_len: int, n_sequences: int) -> torch.Tensor:
    """The held-out set: the first n_sequences packed rows of the validation documents, in an order fixed
    independently of the run's seed, so every run of a grid is measured on the same tokens."""
    documents = open_documents(data, "validation", seed=0)
    tokens, need = [], n_sequences * seq_len
    for text in documents:
        if documents.epoch > 0:
            raise DataError(
                f"the validation documents of data={data.name} hold fewer than {need} tokens; lower "
                "eval_sequences or raise data.holdout_fraction"
            )
        tokens += tokenizer.encode(text)
        tokens.append(tokenizer.eos_token_id)
        if len(tokens) >= need:
            break
    return torch.tensor(tokens[:need], dtype=torch.long).view(n_sequences, seq_len)
