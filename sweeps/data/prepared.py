"""Prepared data: a corpus tokenized once (`python -m sweeps.prepare`, sweeps/prepare.py) into flat token files
that every training process memory-maps and reads by row index. numpy only (the launcher imports this).

A prepared directory holds, per split (`train`, `validation`):
    <split>.tokens   every document's token ids followed by EOS, documents one after another, as raw uint16
                     (when the vocabulary fits) or uint32: np.memmap(path, dtype=manifest["dtype"], mode="r")
    <split>.ends     uint64, the end offset (exclusive) of each document in <split>.tokens
and manifest.json (written last: a directory without it is unfinished, and preparing again resumes it):
the source and its revision, the split, the tokenizer's name and a hash of its vocabulary, the token and
document counts, the dtype.

Training rows are the tokens cut into rows of seq_len (row i = tokens[i*seq_len : (i+1)*seq_len], the last
partial row dropped), as the streamed path packs them. A run visits them in a seeded order (`RowOrder`): the
row at global position p is a function of p, the seed and the corpus only, so any process can read any
position without reading what comes before, and every process count and micro-batch size sees the same rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sweeps.data.config import DataConfig
from sweeps.errors import ConfigError

MANIFEST = "manifest.json"
FORMAT = "parscale-prepared-1"
SPLITS = ("train", "validation")
# The DataConfig fields that decide which tokens a preparation holds (the name is only a label).
SOURCE_FIELDS = ("source", "path", "config_name", "data_dir", "data_files", "train_split", "eval_split",
                 "holdout_fraction", "text_field", "blob_store", "tokenizer")


def source_of(data: DataConfig) -> dict:
    values = asdict(data)
    return {key: values[key] for key in SOURCE_FIELDS}


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def prepare_command(data: DataConfig) -> str:
    return f"python -m sweeps.prepare data={data.name} out=DIR"


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a finished preparation; a ConfigError (one line) when there is none."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        hint = (" (unfinished: run the prepare command again to resume it)"
                if (Path(directory) / "progress.json").exists() else "")
        raise ConfigError(f"data.prepared={directory} holds no finished preparation{hint}; prepare it with "
                          "python -m sweeps.prepare data=NAME out=DIR") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"data.prepared={directory}: {MANIFEST} cannot be read ({error}); prepare it again") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"data.prepared={directory} was written in format {manifest.get('format')!r}, not {FORMAT}; "
                          "prepare it again with this version")
    return manifest


def check_source(manifest: dict, data: DataConfig, directory) -> None:
    """Refuses a preparation made from another source or with another tokenizer name than `data` says."""
    prepared, wanted = manifest["source"], source_of(data)
    changed = [f"{key}: {prepared.get(key)!r} -> {wanted[key]!r}" for key in SOURCE_FIELDS
               if json.dumps(prepared.get(key)) != json.dumps(wanted[key])]
    if changed:
        raise ConfigError(f"data.prepared={directory} was prepared from other data ({'; '.join(changed[:2])}); "
                          f"prepare this data with {prepare_command(data)} or restore those settings")


def open_split(directory: str | Path, split: str, manifest: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, document ends) of one split, memory-mapped read-only."""
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    counts = manifest["splits"][split]
    return (_memmap(directory / f"{split}.tokens", manifest["dtype"], counts["tokens"]),
            _memmap(directory / f"{split}.ends", "uint64", counts["documents"]))


def _memmap(path: Path, dtype: str, length: int) -> np.ndarray:
    if length == 0:  # an empty file cannot be mapped
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(length,))


def check_prepared(config) -> None:
    """For the paper grid's planning: refuses, with one line, a cell whose data would be streamed from the
    hub by every GPU (it must be prepared first) or whose `data.prepared` directory is unfinished, made from
    other data, or too small for the cell's batch and held-out set. The local corpora pass: every run
    prepares them itself (a cached preparation per Python build)."""
    data = config.data
    if data.prepared is None:
        if data.source == "hub":
            raise ConfigError(
                f"data={data.name} is not prepared (every GPU would stream {data.path} from the hub): run "
                f"`{prepare_command(data)}` once (with the same data.* overrides), then launch with data.prepared=DIR"
            )
        return
    manifest = read_manifest(data.prepared)
    check_source(manifest, data, data.prepared)
    rows = manifest["splits"]["train"]["tokens"] // config.seq_len
    if rows < config.global_batch_size:
        raise ConfigError(f"data.prepared={data.prepared} holds {rows} training rows of {config.seq_len} tokens, fewer "
                          f"than one batch of {config.global_batch_size}; lower global_batch_size or seq_len")
    need = config.eval_sequences * config.seq_len
    if manifest["splits"]["validation"]["tokens"] < need:
        raise ConfigError(f"data.prepared={data.prepared} holds {manifest['splits']['validation']['tokens']} "
                          f"validation tokens, fewer than eval_sequences * seq_len = {need}; "
                          "lower eval_sequences or raise data.holdout_fraction and prepare again")


class RowOrder:
    """The seeded order in which a run visits `n` rows, a new order each epoch: global position p is row
    order_e[p mod n] of epoch e = p div n. Up to PERMUTATION_LIMIT rows the order is numpy's
    `default_rng([seed, epoch]).permutation(n)` (what the local corpora have always used, so their runs stay
    reproducible); above it, a keyed Feistel permutation of the position (cycle-walking into [0, n)),
    computed per position, so its memory does not grow with the corpus (a permutation of the Pile's ~1e8 rows
    would take ~1 GB per process)."""

    PERMUTATION_LIMIT = 2**24
    ROUNDS = 6

    def __init__(self, n: int, seed: int, permutation_limit: int | None = None):
        if n < 1:
            raise ValueError("RowOrder needs at least one row")
        self.n, self.seed = n, seed
        limit = self.PERMUTATION_LIMIT if permutation_limit is None else permutation_limit
        self.use_permutation = n <= limit
        self.permutations: dict[int, np.ndarray] = {}  # epoch -> order; the last two epochs are kept
        bits = max(2, (n - 1).bit_length())
        self.half_bits = (bits + 1) // 2
        self.mask = np.uint64((1 << self.half_bits) - 1)

    def __call__(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        epochs, within = np.divmod(positions, self.n)
        rows = np.empty_like(positions)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            rows[chosen] = self._order(int(epoch), within[chosen])
        return rows

    def _order(self, epoch: int, within: np.ndarray) -> np.ndarray:
        if self.use_permutation:
            if epoch not in self.permutations:
                self.permutations = {e: p for e, p in self.permutations.items() if e == epoch - 1}
                self.permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            return self.permutations[epoch][within]
        keys = np.random.default_rng([self.seed, epoch, 0xFE]).bit_generator.random_raw(self.ROUNDS).astype(np.uint64)
        values = self._feistel(within.astype(np.uint64), keys)
        outside = values >= self.n
        while outside.any():  # cycle-walking: the cycle through an in-range value returns into the range
            values[outside] = self._feistel(values[outside], keys)
            outside = values >= self.n
        return values.astype(np.int64)

    def _feistel(self, values: np.ndarray, keys: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.half_bits)
        left, right = values >> shift, values & self.mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & self.mask)
        return (left << shift) | right


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of 64-bit words (the Feistel round function)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))

