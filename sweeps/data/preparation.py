"""Tokenize a corpus once into the flat token files of sweeps/data/prepared.py (the library behind
`python -m sweeps.prepare`, whose docstring has the usage; docs/data.md).

Reads the data set once (hub data through `datasets` streaming, file contents from the blob store where the
data set has one) and tokenizes it in `workers` processes (default: one per core, batched fast tokenizer).
Progress is printed every `report_interval_s` seconds. The files are committed (flushed, fsync'ed, and the
reader's position recorded in DIR/progress.json) every `commit_interval_s` seconds, so the same command
after an interruption resumes from the last commit: what was written after it is cut off and read again.
A finished DIR is left as it is. Two preparations of one DIR at once wait for each other (a file lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeps.data.config import LOCAL_BUILDERS, DataConfig
from sweeps.data.documents import cache_home, load_tokenizer, open_documents, python_build, split_of
from sweeps.data.prepared import FORMAT, MANIFEST, SPLITS, read_manifest, source_of, token_dtype
from sweeps.errors import ConfigError
from sweeps.files import atomic_write_text

PROGRESS = "progress.json"


@dataclass
class Progress:
    """What has been written so far (per split: tokens and documents), and how fast."""

    splits: dict = field(default_factory=lambda: {split: {"tokens": 0, "documents": 0} for split in SPLITS})
    text_bytes: int = 0
    started: float = field(default_factory=time.time)
    tokens_at_start: int = 0

    @property
    def tokens(self) -> int:
        return sum(counts["tokens"] for counts in self.splits.values())

    def line(self, name: str, done: bool = False) -> str:
        seconds = max(time.time() - self.started, 1e-9)
        rate = (self.tokens - self.tokens_at_start) / seconds
        train, validation = self.splits["train"], self.splits["validation"]
        return (f"prepare {name}: {'done, ' if done else ''}train {train['documents']:,} documents / "
                f"{train['tokens']:,} tokens, validation {validation['documents']:,} / {validation['tokens']:,}; "
                f"{rate:,.0f} tokens/s, {self.text_bytes / seconds / 1e6:.1f} MB/s of text, {seconds:.0f} s")


def prepare(data: DataConfig, out: str | Path, workers: int | None = None, segment_bytes: int = 4 << 20,
            commit_interval_s: float = 30.0, report_interval_s: float = 10.0, report=None) -> dict:
    """Prepares `data` into `out` (resuming an interrupted preparation there) and returns the manifest.
    `report(progress, line)` is called after every segment written (default: print `line` every
    report_interval_s seconds)."""
    out = Path(out)
    new = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(out):
            if (out / MANIFEST).exists():
                manifest = read_manifest(out)
                if manifest["source"] != source_of(data):
                    prepared = manifest["source"]["path"] or manifest["source"]["source"]
                    raise ConfigError(f"out={out} holds a preparation of other data ({prepared}); "
                                      "use another out=DIR or delete it")
                return manifest
            return _prepare(data, out, workers or cores(), segment_bytes, commit_interval_s, report_interval_s,
                            report)
    except BaseException:
        # A preparation that failed before writing a token (no source, no tokenizer, offline) leaves no folder,
        # so the next try does not find a stale lock and an empty "preparation" there.
        if new and {path.name for path in out.iterdir()} <= {".lock"}:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _prepare(data, out, workers, segment_bytes, commit_interval_s, report_interval_s, report) -> dict:
    identity = _identity(data, load_tokenizer(data))
    progress, start_pass, reader_state, missing = _resume_point(data, out, identity)
    passes = [None] if data.source != "hub" or not data.eval_split else ["train", "validation"]

    writer = _Writer(out, identity["dtype"], progress.splits)
    last_report, last_commit = 0.0, time.time()
    pool = _pool(data.tokenizer, workers) if workers > 1 else None
    if pool is None:
        _init_worker(data.tokenizer)
    try:
        for pass_index in range(start_pass, len(passes)):
            documents = open_documents(data, passes[pass_index])
            if reader_state is not None:
                documents.load_state_dict(reader_state)
                reader_state = None
            pending = deque()  # (result, reader position after its segment, blobs missing by then)
            for segment, state, missing_now in _segments(
                    documents, passes[pass_index], data.holdout_fraction, segment_bytes):
                progress.text_bytes += sum(len(text) for texts in segment.values() for text in texts)
                result = pool.apply_async(_tokenize, (segment,)) if pool else _Done(_tokenize(segment))
                pending.append((result, state, missing + missing_now))
                # In order, keeping at most two segments per worker in flight.
                while pending and (pool is None or len(pending) > 2 * workers or pending[0][0].ready()):
                    result, state, missing_then = pending.popleft()
                    writer.append(result.get())
                    if time.time() - last_commit >= commit_interval_s:
                        _commit(out, identity, writer, pass_index, state, missing_then)
                        last_commit = time.time()
                    last_report = _report(report, progress, data.name, last_report, report_interval_s)
            while pending:
                result, state, missing_then = pending.popleft()
                writer.append(result.get())
                last_report = _report(report, progress, data.name, last_report, report_interval_s)
            missing += _missing(documents)
            _commit(out, identity, writer, pass_index + 1, None, missing)
            last_commit = time.time()
    finally:
        if pool is not None:
            pool.terminate()
        writer.close()
    return _write_manifest(data, out, identity, progress, missing, report)


def _identity(data, tokenizer) -> dict:
    """What a preparation is of: a resumed one must match it, and the manifest starts with it."""
    return {"format": FORMAT, "source": source_of(data),
            "tokenizer": {"name": data.tokenizer, "vocab_size": tokenizer.vocab_size,
                          "eos_token_id": tokenizer.eos_token_id, "vocab_hash": tokenizer.vocab_hash()},
            "dtype": token_dtype(tokenizer.vocab_size)}


def _resume_point(data, out: Path, identity: dict) -> tuple[Progress, int, dict | None, int]:
    """(progress so far, pass, reader position, blobs missing so far) of an interrupted preparation of the
    same identity in `out`; the start of a new one when there is none."""
    saved = _read_progress(out)
    if saved is not None and {key: saved[key] for key in identity} != identity:
        raise ConfigError(f"out={out} holds an unfinished preparation of other data or another tokenizer; "
                          "choose another out=DIR or delete it")
    progress = Progress()
    if saved is None:
        return progress, 0, None, 0
    progress.splits = saved["splits"]
    progress.tokens_at_start = progress.tokens
    print(f"prepare {data.name}: resuming {out} at {progress.tokens:,} tokens", file=sys.stderr, flush=True)
    return progress, saved["pass"], saved["reader"], saved["missing_blobs"]


def _write_manifest(data, out: Path, identity: dict, progress: Progress, missing: int, report) -> dict:
    """Finishes the preparation: the manifest replaces the progress file, and the last report line."""
    if progress.splits["train"]["documents"] == 0:
        raise ConfigError(f"data={data.name} gave no training documents; "
                          "check data.path, data.data_files and the split")
    manifest = {**identity, "revision": source_revision(data), "splits": progress.splits, "missing_blobs": missing,
                "seconds": round(time.time() - progress.started, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    (out / PROGRESS).unlink(missing_ok=True)
    line = progress.line(data.name, done=True)
    if report is not None:
        report(progress, line)
    else:
        print(line, file=sys.stderr, flush=True)
    return manifest


class _Done:
    """The result of a segment tokenized in this process, shaped like a pool's AsyncResult."""

    def __init__(self, value):
        self.value = value

    def ready(self) -> bool:
        return True

    def get(self):
        return self.value


def _segments(documents, split, holdout_fraction, segment_bytes):
    """(segment, reader position after it, blobs missing so far): segment maps each split to its next
    documents. A segment ends after `segment_bytes` of text; both splits' documents of one stretch of the
    source go in one segment, so the position after it covers everything written."""
    segment, size = {name: [] for name in SPLITS}, 0
    for text in documents:
        segment[split or split_of(text, holdout_fraction)].append(text)
        size += len(text)
        if size >= segment_bytes:
            yield segment, documents.state_dict(), _missing(documents)
            segment, size = {name: [] for name in SPLITS}, 0
    if size:
        yield segment, documents.state_dict(), _missing(documents)


def _missing(documents) -> int:
    return getattr(documents, "missing", 0)


_tokenizer = None


def _init_worker(tokenizer_name: str) -> None:
    global _tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core; no thread pool inside each
    _tokenizer = load_tokenizer(DataConfig(name="", source="hub", tokenizer=tokenizer_name))


def _tokenize(segment: dict) -> dict:
    """{split: (tokens, document lengths)} of one segment: each document's ids, then EOS."""
    eos = np.array([_tokenizer.eos_token_id], dtype=np.int64)
    result = {}
    for split, texts in segment.items():
        ids = _tokenizer.encode_batch(texts) if texts else []
        pieces = [piece for item in ids for piece in (item, eos)]
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        result[split] = (tokens, np.array([len(item) + 1 for item in ids], dtype=np.uint64))
    return result


def _pool(tokenizer_name: str, workers: int):
    # fork: the workers start at once with the tokenizer code already imported (importing it again costs
    # seconds per worker). The pool is made before the reader starts any thread.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(tokenizer_name,))


class _Writer:
    """Appends to <split>.tokens and <split>.ends, cutting off anything written after the last commit."""

    def __init__(self, out: Path, dtype: str, counts: dict):
        self.dtype, self.counts, self.files = np.dtype(dtype), counts, {}
        for split in SPLITS:
            for suffix, itemsize, count in (("tokens", self.dtype.itemsize, "tokens"), ("ends", 8, "documents")):
                path = out / f"{split}.{suffix}"
                handle = open(path, "ab")  # noqa: SIM115  (kept in self.files until close())
                handle.truncate(counts[split][count] * itemsize)
                handle.seek(0, os.SEEK_END)
                self.files[split, suffix] = handle

    def append(self, result: dict) -> None:
        for split, (tokens, lengths) in result.items():
            counts = self.counts[split]
            self.files[split, "tokens"].write(tokens.astype(self.dtype).tobytes())
            ends = counts["tokens"] + np.cumsum(lengths, dtype=np.uint64)
            self.files[split, "ends"].write(ends.tobytes())
            counts["tokens"] += len(tokens)
            counts["documents"] += len(lengths)

    def flush(self) -> None:
        for handle in self.files.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()


def _commit(out, identity, writer, pass_index, reader_state, missing) -> None:
    writer.flush()
    state = {**identity, "pass": pass_index, "reader": reader_state, "splits": writer.counts, "missing_blobs": missing}
    atomic_write_text(out / PROGRESS, json.dumps(state) + "\n")


def _read_progress(out: Path) -> dict | None:
    try:
        return json.loads((out / PROGRESS).read_text())
    except FileNotFoundError:
        return None


def _report(report, progress, name, last, interval) -> float:
    if report is not None:
        report(progress, progress.line(name))
        return last
    if time.time() - last >= interval:
        print(progress.line(name), file=sys.stderr, flush=True)
        return time.time()
    return last


@contextlib.contextmanager
def _locked(out: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another preparation of {out} to finish", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def source_revision(data: DataConfig) -> str:
    """Which version of the source was read: the hub repository's commit, a digest of local files' names,
    sizes and times, or the Python build for the standard-library corpora."""
    if data.source != "hub":
        return f"python {platform.python_version()} standard library ({python_build().split('|')[1]})"
    if data.path in LOCAL_BUILDERS:
        files = data.data_files
        files = [files] if isinstance(files, str) else list(files.values()) if isinstance(files, dict) else list(files)
        flat = sorted(str(path) for item in files for path in ([item] if isinstance(item, str) else item))
        stats = [(path, os.stat(path).st_size, int(os.stat(path).st_mtime)) for path in flat if os.path.exists(path)]
        return "local files " + json.dumps(stats)[:2000]
    try:
        from huggingface_hub import HfApi

        return f"hub {data.path}@{HfApi().dataset_info(data.path).sha}"
    except Exception as error:  # offline, gated without a token: the manifest says so
        return f"hub {data.path}@unknown ({type(error).__name__})"


def local_preparation(data: DataConfig) -> Path:
    """The prepared copy of a local corpus (stdlib-*), made on first use in this process and cached per
    Python build: the tiny grid's cells read their rows through the same memmap path as the cluster."""
    key = source_of(data) | {"python": python_build(), "format": FORMAT}
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=6).hexdigest()
    out = cache_home() / "prepared" / f"{data.source}-{digest}"
    if not (out / MANIFEST).exists():
        prepare(data, out, workers=1, report=lambda progress, line: None)
    return out


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
