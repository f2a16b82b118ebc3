"""The data path: the standard-library corpora, the deterministic hash split, the same `datasets` streaming
loader on local files with a tokenizer read from a directory, sharding without overlap, the shuffled rows of
the local corpora, and resuming from a saved position."""

import io
import itertools
import json
from dataclasses import replace

import pytest
import torch

from sweeps.config import DataConfig
from sweeps.data import (
    ByteTokenizer,
    DataError,
    PretrainedTokenizer,
    ShuffledRows,
    StreamedBatches,
    eval_batch,
    local_training_rows,
    open_documents,
    split_of,
    stdlib_docstrings,
    training_batches,
)
from sweeps import data as data_module
from train_helpers import WORDS, write_corpus

CODE = DataConfig(name="stdlib-code", source="stdlib-code", holdout_fraction=0.02)
PROSE = DataConfig(name="stdlib-prose", source="stdlib-prose", holdout_fraction=0.02)


def first_epoch(documents) -> list[str]:
    texts = []
    for text in documents:
        if documents.epoch > 0:
            return texts
        texts.append(text)


def test_stdlib_code_split_is_deterministic_disjoint_and_covers_the_library():
    train = first_epoch(open_documents(CODE, "train", seed=0))
    validation = first_epoch(open_documents(CODE, "validation", seed=0))
    assert not set(train) & set(validation)
    assert 0.005 < len(validation) / (len(train) + len(validation)) < 0.05
    assert any("def " in text for text in train) and len(train) > 500
    # A different seed changes the order, not the split.
    reordered = first_epoch(open_documents(CODE, "train", seed=1))
    assert reordered != train and sorted(reordered) == sorted(train)
    assert all(split_of(text, 0.02) == "validation" for text in validation)


def test_stdlib_prose_is_english_documentation_without_overlap():
    train = list(itertools.islice(open_documents(PROSE, "train", seed=0), 40))
    validation = list(itertools.islice(open_documents(PROSE, "validation", seed=0), 3))
    assert not set(train) & set(validation)
    text = " ".join(train)
    assert text.count(" the ") > 100
    assert sum(char.isalpha() or char.isspace() for char in text) > 0.9 * len(text)  # prose, not code


def test_packing_appends_eos_and_keeps_every_token(tmp_path):
    data = DataConfig(name="corpus", source="hub", path="json", data_files=write_corpus(tmp_path), holdout_fraction=0.1)
    tokenizer = ByteTokenizer()
    batches = StreamedBatches(open_documents(data, "train", 0), tokenizer, 16, 2, num_shards=1, shards=range(1))
    stream = torch.cat([batches.next(0).flatten() for _ in range(30)]).tolist()
    expected = []
    for text in open_documents(data, "train", 0):
        expected += [*text.encode(), tokenizer.eos_token_id]
        if len(expected) >= len(stream):
            break
    assert stream == expected[: len(stream)]


def test_shards_split_documents_across_processes_and_match_one_process(tmp_path):
    """Two processes with shards {0, 1} and {2, 3} get exactly the batches one process gets for those shards,
    and no document reaches two shards."""
    tokenizer = ByteTokenizer()
    data = DataConfig(name="corpus", source="hub", path="json", data_files=write_corpus(tmp_path), holdout_fraction=0.1)

    def batches(shards):
        return StreamedBatches(open_documents(data, "train", 0), tokenizer, 16, 2, num_shards=4, shards=shards)

    single, first, second = batches(range(4)), batches(range(0, 2)), batches(range(2, 4))
    for _ in range(5):
        for shard in range(4):
            process = first if shard < 2 else second
            assert torch.equal(single.next(shard), process.next(shard))
    # Documents are dealt round-robin: the first eight go to shards 0, 1, 2, 3, 0, 1, 2, 3.
    documents = list(itertools.islice(open_documents(data, "train", 0), 8))
    expected_start = torch.tensor(list(documents[2].encode()[:16]))
    assert torch.equal(batches(range(2, 3)).next(2)[0], expected_start)


@pytest.mark.parametrize("source", ["stdlib-code", "json"])
def test_resume_from_a_saved_position_continues_the_same_batches(tmp_path, source):
    data = CODE if source == "stdlib-code" else DataConfig(
        name="corpus", source="hub", path="json", data_files=write_corpus(tmp_path), holdout_fraction=0.1
    )

    def batches():
        return training_batches(data, ByteTokenizer(), 32, 2, num_shards=3, shards=range(3), seed=3)

    original = batches()
    for step in range(7):
        original.next(step % 3)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = batches()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(7, 40):  # long enough to cross document boundaries of the streamed corpus
        assert torch.equal(original.next(step % 3), resumed.next(step % 3))


def test_local_rows_are_the_training_documents_in_order_with_eos():
    rows = local_training_rows(CODE, ByteTokenizer(), 64)
    documents = open_documents(CODE, "train", seed=0)
    first, second = itertools.islice(documents.in_order(), 2)
    expected = [*first.encode(), 258, *second.encode(), 258][:128]
    assert rows.shape[1] == 64 and rows.flatten()[:128].tolist() == expected
    total = sum(len(text.encode()) + 1 for text in documents.in_order())
    assert rows.shape[0] == total // 64


def test_shuffled_rows_visit_every_row_once_per_epoch_in_a_seeded_order():
    rows = torch.arange(50 * 4, dtype=torch.int32).view(50, 4)  # row i holds 4i ... 4i + 3
    def drawn(seed, shards=range(2), steps=25):
        batches = ShuffledRows(rows, micro_batch_size=3, num_shards=2, shards=shards, seed=seed)
        return [batches.next(shard)[:, 0] // 4 for _ in range(steps) for shard in shards]
    order = torch.cat(drawn(seed=0)).tolist()  # 150 rows: three epochs of 50
    for epoch in range(3):
        assert sorted(order[50 * epoch:50 * (epoch + 1)]) == list(range(50))
    assert order[:50] != order[50:100] and order[:50] != list(range(50))
    assert torch.cat(drawn(seed=1)).tolist() != order
    # Two processes (shard 0 and shard 1) together draw exactly the rows of one process with both shards.
    together = drawn(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(together[0::2], drawn(seed=0, shards=range(0, 1))))
    assert all(torch.equal(a, b) for a, b in zip(together[1::2], drawn(seed=0, shards=range(1, 2))))


def test_shuffled_rows_resume_across_an_epoch_boundary():
    rows = torch.arange(30 * 2, dtype=torch.int32).view(30, 2)
    original = ShuffledRows(rows, micro_batch_size=4, num_shards=2, shards=range(2), seed=5)
    for step in range(3):
        for shard in range(2):
            original.next(shard)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = ShuffledRows(rows, micro_batch_size=4, num_shards=2, shards=range(2), seed=5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(3, 12):  # rows 24 ... 96 of the order: epochs 0 to 3
        for shard in range(2):
            assert torch.equal(original.next(shard), resumed.next(shard))


def test_shuffled_rows_refuse_a_corpus_smaller_than_a_batch_and_foreign_state():
    rows = torch.zeros(5, 4, dtype=torch.int32)
    with pytest.raises(DataError, match="lower global_batch_size or seq_len"):
        ShuffledRows(rows, micro_batch_size=3, num_shards=2, shards=range(2), seed=0)
    batches = ShuffledRows(rows, micro_batch_size=1, num_shards=2, shards=range(2), seed=0)
    with pytest.raises(DataError, match="resume with the same number of processes"):
        batches.load_state_dict({"drawn": {"0": 3}})
    with pytest.raises(DataError, match="start this run again in a new run dir"):
        batches.load_state_dict({"documents": {"epoch": 0, "position": 9}, "dealt": 9, "pending": {}})


def test_docstrings_are_read_from_the_cache_once_written(tmp_path, monkeypatch):
    files = tuple(path for path in data_module.stdlib_files() if path.name in ("bisect.py", "colorsys.py"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(data_module, "stdlib_files", lambda: files)
    stdlib_docstrings.cache_clear()
    try:
        parsed = stdlib_docstrings()
        assert set(parsed) == {str(path) for path in files} and "bisect" in parsed[str(files[0])].lower()
        cache = data_module.prose_cache_path()
        assert cache.is_relative_to(tmp_path) and json.loads(cache.read_text()) == parsed
        cache.write_text(json.dumps({str(path): "from the cache" for path in files}))
        stdlib_docstrings.cache_clear()
        assert set(stdlib_docstrings().values()) == {"from the cache"}
    finally:
        stdlib_docstrings.cache_clear()


def test_hub_loader_reads_local_files_with_a_tokenizer_from_a_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    paths = write_corpus(tmp_path / "corpus")
    vocabulary = {"<unk>": 0, "<eos>": 1, **{word: index + 2 for index, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>").save_pretrained(
        tmp_path / "tokenizer"
    )
    data = DataConfig(name="corpus", source="hub", path="json", data_files=paths, eval_split=None,
                      holdout_fraction=0.1, tokenizer=str(tmp_path / "tokenizer"))
    tokenizer = PretrainedTokenizer(data.tokenizer)
    assert tokenizer.eos_token_id == 1 and tokenizer.vocab_size == len(vocabulary)
    rows = eval_batch(data, tokenizer, seq_len=8, n_sequences=4)
    first_document = next(iter(open_documents(data, "validation", 0)))
    assert rows.flatten().tolist() == [vocabulary[word] for word in first_document.split()][:32]
    assert 0 not in rows.tolist()  # every word known: the tokenizer really is the one built above

    # A data set with its own validation split uses it instead of the hash holdout.
    split_data = replace(data, data_files={"train": paths[0], "validation": paths[1]}, eval_split="validation")
    validation = first_epoch(open_documents(split_data, "validation", 0))
    assert validation == first_epoch(open_documents(replace(data, data_files=paths[1], eval_split="train"), "train", 0))


def test_missing_text_field_and_empty_validation_are_explained(tmp_path):
    data = DataConfig(name="corpus", source="hub", path="json", data_files=write_corpus(tmp_path), text_field="body")
    with pytest.raises(DataError, match=r"text_field='body'.*\['text'\]"):
        next(iter(open_documents(data, "train", 0)))
    with pytest.raises(DataError, match="lower eval_sequences or raise data.holdout_fraction"):
        eval_batch(replace(data, text_field="text"), ByteTokenizer(), seq_len=64, n_sequences=1000)


def test_eval_rows_do_not_depend_on_the_run():
    first = eval_batch(CODE, ByteTokenizer(), 32, 8)
    assert torch.equal(first, eval_batch(CODE, ByteTokenizer(), 32, 8))
    assert first.shape == (8, 32) and int(first.max()) < 259
