"""What a run reads: the data set's settings, checked before anything is opened (conf/data/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps.errors import ConfigError

DATA_SOURCES = ("hub", "stdlib-code", "stdlib-prose")
LOCAL_BUILDERS = ("json", "text", "csv", "parquet", "arrow")  # datasets builders that read data_files


@dataclass
class DataConfig:
    name: str  # the `dataset` column of the results table, e.g. "pile"
    source: str  # one of DATA_SOURCES
    path: str | None = None  # hub: a `datasets.load_dataset` path (hub name, or "json"/"text" for local files)
    config_name: str | None = None
    data_dir: str | None = None
    data_files: Any = None
    train_split: str = "train"
    eval_split: str | None = None  # None: hold out `holdout_fraction` of train_split by document hash
    holdout_fraction: float = 0.01
    text_field: str = "text"
    tokenizer: str = "bytes"  # "bytes" (the tiny models' vocabulary) or an AutoTokenizer name or directory
    blob_store: str | None = None  # rows carry Software Heritage blob ids; contents from here (documents.py)
    prepared: str | None = None  # a directory written by `python -m sweeps.prepare`: train from its token files

    def check(self) -> None:
        """Refuses a data source that cannot be read, before anything is opened."""
        if self.source not in DATA_SOURCES:
            raise ConfigError(f"data.source={self.source!r} is unknown; use one of {', '.join(DATA_SOURCES)}")
        if self.source == "hub" and not self.path:
            raise ConfigError(f"data={self.name} has source hub but no path; set data.path to a hub name or json/text")
        if self.source == "hub" and self.path in LOCAL_BUILDERS and not self.data_files:
            raise ConfigError(f"data.path={self.path} reads local files: set data.data_files='[a.{self.path},...]'")
        if self.source != "hub" and self.blob_store:
            raise ConfigError(f"data.blob_store applies to hub data only; {self.source} reads its own files")
        if self.source != "hub" and self.eval_split:
            raise ConfigError("data.eval_split applies to hub data only; "
                              f"{self.source} holds out by hash (holdout_fraction)")
        if self.eval_split is None and not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"data.holdout_fraction={self.holdout_fraction} must lie in (0, 1) "
                              "when data.eval_split is null")
