"""Documents: where the text comes from, which split a document belongs to, and the tokenizers.

Sources (`source` in conf/data/*.yaml):
- hub: Hugging Face `datasets` in streaming mode. `path` is a hub name (The Pile, the Stack) or a builder
  such as "json" / "text" with local `data_files`; both go through the same `load_dataset(..., streaming=True)`.
  With `blob_store` set, the rows name their file by Software Heritage blob id (`blob_id`, `src_encoding`,
  as in The Stack v2) and the text is read from that store: `s3://softwareheritage/content` (the data
  card's bucket; gzip objects named by blob id) or a local directory of the same layout.
- stdlib-code: the Python sources of the running interpreter's standard library, one document per file.
- stdlib-prose: English from the standard library's documentation: the pydoc topics, and per module file
  its docstrings (read with `ast`, nothing imported; cached per Python build, see `prose_cache_path`).

Split: a data set with an `eval_split` uses it; otherwise a document is held out when the hash of its text
falls in the first `holdout_fraction` of the hash range, so train and validation never share a document
(identical texts land on the same side) and the split never depends on the seed or the order.

Every source is read in one fixed order, one pass at a time, with a position (`state_dict()`, valid between
two documents) from which a new reader continues: the stream's own state for hub data, the entry index for
the standard library.
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import itertools
import json
import os
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.sizes import BYTE_EOS_ID, BYTE_VOCAB_SIZE
from sweeps.data.config import DataConfig
from sweeps.errors import ConfigError


class DataError(ConfigError):
    """The data cannot be read as configured (missing field, empty split)."""


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255 and EOS = 258: the vocabulary of the tiny model sizes. Needs no files."""

    name = "bytes"
    vocab_size = BYTE_VOCAB_SIZE
    eos_token_id = BYTE_EOS_ID

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(text.encode("utf-8"), dtype=np.uint8) for text in texts]

    def vocab_hash(self) -> str:
        return _digest(f"utf-8 bytes, eos {self.eos_token_id}, vocab {self.vocab_size}")


class PretrainedTokenizer:
    """A `transformers.AutoTokenizer` by hub name (e.g. Qwen/Qwen2.5-0.5B, the paper's) or local directory."""

    def __init__(self, name: str):
        from transformers import AutoTokenizer

        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(name)
        # Documents are split into training rows here, so the tokenizer's own length limit does not apply.
        self.tokenizer.model_max_length = 2**62
        self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise DataError(f"tokenizer {name} has no eos_token; choose a tokenizer with one (documents end with it)")
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Many documents in one call: a fast tokenizer encodes them in Rust without offsets or masks."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            encodings = backend.encode_batch_fast(texts, add_special_tokens=False)
            return [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]
        ids = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [np.asarray(item, dtype=np.int64) for item in ids]

    def vocab_hash(self) -> str:
        """A hash of the vocabulary (token -> id, added tokens included) and the EOS id."""
        vocabulary = sorted(self.tokenizer.get_vocab().items(), key=lambda item: item[1])
        return _digest(json.dumps([vocabulary, self.eos_token_id], ensure_ascii=False))


class PreparedTokenizer:
    """The tokenizer as a prepared directory's manifest records it: training from prepared files needs only
    its vocabulary size and EOS id, so a compute node loads nothing from the hub."""

    def __init__(self, directory: str):
        from sweeps.data.prepared import read_manifest

        recorded = read_manifest(directory)["tokenizer"]
        self.name, self.vocab_size, self.eos_token_id = (recorded["name"], recorded["vocab_size"],
                                                         recorded["eos_token_id"])
        self.recorded_hash = recorded["vocab_hash"]

    def vocab_hash(self) -> str:
        return self.recorded_hash

    def encode(self, text: str) -> list[int]:
        raise DataError(f"data.prepared is set: the text was tokenized by sweeps.prepare with {self.name}; "
                        "unset data.prepared to tokenize here")


def load_tokenizer(data: DataConfig):
    """The data's tokenizer: bytes, a transformers tokenizer, or (prepared data) the manifest's record of one."""
    if data.prepared:
        return PreparedTokenizer(data.prepared)
    return ByteTokenizer() if data.tokenizer == "bytes" else PretrainedTokenizer(data.tokenizer)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def split_of(text: str, holdout_fraction: float) -> str:
    """"validation" for the documents whose text hashes into the first holdout_fraction, else "train"."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") < holdout_fraction * 2**64 else "train"


# --- the standard library -----------------------------------------------------------------------------


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


def python_build() -> str:
    """The running Python and the location of its standard library: what the stdlib corpora depend on."""
    return f"{sys.version}|{sysconfig.get_paths()['stdlib']}"


def prose_cache_path() -> Path:
    """Where the standard library's docstrings are cached: parsing every module takes ~10 s, which each cell of
    a tiny grid would otherwise pay. Keyed by the Python build and its stdlib location; delete it at will."""
    key = hashlib.blake2b(python_build().encode(), digest_size=6).hexdigest()
    return cache_home() / f"stdlib-prose-{key}.json"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parscale"


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
    """The standard library's documents of one split (or of both, `holdout=None`), in the fixed order of its
    entries (sorted files; for prose the pydoc topics first). The position is the next entry's index."""

    def __init__(self, kind: str, holdout: str | None, holdout_fraction: float):
        self.kind, self.holdout, self.holdout_fraction = kind, holdout, holdout_fraction
        if kind == "stdlib-code":
            self.entries = list(stdlib_files())
        else:
            from pydoc_data.topics import topics

            self.entries = [topics[key] for key in sorted(topics)] + list(stdlib_files())
        self.position = 0

    def _text(self, entry) -> str:
        if isinstance(entry, str):  # a pydoc topic
            return entry
        if self.kind == "stdlib-code":
            return entry.read_bytes().decode("utf-8", errors="replace")
        cached = stdlib_docstrings().get(str(entry))  # a file added since the cache was written is parsed here
        return _docstrings(entry) if cached is None else cached

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        while self.position < len(self.entries):
            text = self._text(self.entries[self.position])
            self.position += 1
            if text and (self.holdout is None or split_of(text, self.holdout_fraction) == self.holdout):
                yield text

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


# --- hub data -----------------------------------------------------------------------------------------


class BlobContents:
    """File contents by Software Heritage blob id, as The Stack v2's data card reads them: the object
    `content/<blob_id>` of the `softwareheritage` S3 bucket, gzip-compressed, decoded with the row's
    `src_encoding`. `url` is `s3://BUCKET/PREFIX` (credentials from boto3's usual chain, e.g. AWS_ACCESS_KEY_ID;
    anonymous when there are none; AWS_ENDPOINT_URL_S3 points it at another S3 service) or a local directory of
    the same layout (a mirror made with `s5cmd cp` or `aws s3 sync`). Files are fetched `threads` at a time.
    A blob that is missing gives None (the reader skips and counts it); any other failure stops with one line."""

    def __init__(self, url: str, threads: int = 32):
        self.url, self.threads = url.rstrip("/"), threads
        self.client = None
        if self.url.startswith("s3://"):
            self.bucket, _, self.prefix = self.url.removeprefix("s3://").partition("/")
            self.client = _s3_client(threads)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="blobs")

    def fetch(self, rows: list[dict]) -> list[str | None]:
        for row in rows:
            if "blob_id" not in row:
                raise DataError(f"data.blob_store is set but the rows have no blob_id (they have {sorted(row)}); "
                                "unset data.blob_store for data sets that carry their text")
        return list(self.pool.map(self._fetch_one, rows))

    def _fetch_one(self, row: dict) -> str | None:
        blob_id, encoding = row["blob_id"], row.get("src_encoding") or "utf-8"
        try:
            if self.client is None:
                compressed = Path(self.url, blob_id).read_bytes()
            else:
                key = f"{self.prefix}/{blob_id}" if self.prefix else blob_id
                compressed = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except FileNotFoundError:
            return None
        except Exception as error:
            if type(error).__name__ == "NoSuchKey":
                return None
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DataError(f"reading blob {blob_id} from {self.url} failed ({first}); check the AWS credentials "
                            "and data.blob_store (bulk access needs an agreement with Software Heritage)") from None
        try:
            return gzip.decompress(compressed).decode(encoding, errors="replace")
        except LookupError:  # an encoding name Python does not know
            return gzip.decompress(compressed).decode("utf-8", errors="replace")


def _s3_client(threads: int):
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
    except ImportError:
        raise DataError("data.blob_store on S3 needs boto3: pip install 'parscale-toolkit[stack-v2]'") from None
    config = Config(max_pool_connections=threads, retries={"max_attempts": 10, "mode": "adaptive"})
    if boto3.Session().get_credentials() is None:
        config = config.merge(Config(signature_version=UNSIGNED))
    return boto3.client("s3", config=config)


class HubDocuments:
    """One pass over a `datasets` streaming split in the files' order (The Pile's files are already shuffled,
    and a shuffle buffer would be lost on resume): every document (`holdout=None`) or those of one split by
    hash. Rows are read `READ_BATCH` at a time (their contents fetched together when `blob_store` is set);
    the position is the stream's `state_dict()` before the current batch plus the rows of it consumed, so
    a new reader continues exactly without reading the stream from the top. `missing` counts the blobs this
    reader found missing in the store (skipped)."""

    READ_BATCH = 256

    def __init__(self, data: DataConfig, hub_split: str, holdout: str | None):
        self.data, self.hub_split, self.holdout = data, hub_split, holdout
        self.blobs = BlobContents(data.blob_store) if data.blob_store else None
        self.batch_state, self.taken, self.resume, self.missing = None, 0, None, 0

    def _open(self):
        import datasets

        data = self.data
        return datasets.load_dataset(
            data.path, name=data.config_name, data_dir=data.data_dir, data_files=data.data_files,
            split=self.hub_split, streaming=True,
        )

    def __iter__(self):
        dataset = self._open()
        skip = 0
        if self.resume is not None:
            dataset.load_state_dict(self.resume["stream"])
            skip, self.resume = self.resume["taken"], None
        rows = iter(dataset)
        while True:
            self.batch_state, self.taken = dataset.state_dict(), 0
            batch = list(itertools.islice(rows, self.READ_BATCH))
            if not batch:
                return
            texts = self._texts(batch)
            for index in range(skip, len(batch)):
                self.taken = index + 1
                text = texts[index]
                self.missing += text is None
                if text and (self.holdout is None or split_of(text, self.data.holdout_fraction) == self.holdout):
                    yield text
            skip = 0

    def _texts(self, rows: list[dict]) -> list[str | None]:
        if self.blobs is not None:
            return self.blobs.fetch(rows)
        field = self.data.text_field
        if field not in rows[0]:
            raise DataError(f"data.text_field={field!r} is not a field of {self.data.path}; it has {sorted(rows[0])}")
        return [row[field] for row in rows]

    def state_dict(self) -> dict:
        return {"stream": self.batch_state, "taken": self.taken}

    def load_state_dict(self, state: dict) -> None:
        self.resume = state if state["stream"] is not None else None


def open_documents(data: DataConfig, split: str | None):
    """The documents of `split` ("train", "validation", or None for both, when they come from one hub split
    held out by hash), one pass in the source's order."""
    if data.source != "hub":
        return StdlibDocuments(data.source, split, data.holdout_fraction)
    if data.eval_split:
        return HubDocuments(data, data.eval_split if split == "validation" else data.train_split, holdout=None)
    return HubDocuments(data, data.train_split, holdout=split)
