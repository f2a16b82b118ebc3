"""The data path: the standard-library corpora, the deterministic hash split, the same `datasets` streaming
loader on local files with a tokenizer read from a directory, rows by global position (prepared and streamed)
that do not depend on how a step is split over processes, the seeded row order, and resuming."""

import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sweeps.data import documents as documents_module
from sweeps.data.batches import DataError, PreparedRows, StreamedRows, eval_batch, prepared_directory, training_batches
from sweeps.data.config import DataConfig
from sweeps.data.documents import ByteTokenizer, PretrainedTokenizer, open_documents, split_of, stdlib_docstrings
from sweeps.data.prepared import RowOrder, open_split, read_manifest

from data_helpers import jsonl_data
from train_helpers import WORDS, write_corpus

CODE = DataConfig(name="stdlib-code", source="stdlib-code", holdout_fraction=0.02)
PROSE = DataConfig(name="stdlib-prose", source="stdlib-prose", holdout_fraction=0.02)


def test_stdlib_code_split_is_deterministic_disjoint_and_covers_the_library():
    train = list(open_documents(CODE, "train"))
    validation = list(open_documents(CODE, "validation"))
    assert not set(train) & set(validation)
    assert 0.005 < len(validation) / (len(train) + len(validation)) < 0.05
    assert any("def " in text for text in train) and len(train) > 500
    assert list(open_documents(CODE, "train")) == train  # a fixed order
    assert all(split_of(text, 0.02) == "validation" for text in validation)
    both = list(open_documents(CODE, None))
    assert sorted(both) == sorted(train + validation)


def test_stdlib_prose_is_english_documentation_without_overlap():
    train = list(open_documents(PROSE, "train"))[::50]  # topics and docstrings alike
    validation = list(open_documents(PROSE, "validation"))[:3]
    assert not set(train) & set(validation)
    text = " ".join(train)
    assert text.count(" the ") > 100
    assert sum(char.isalpha() or char.isspace() for char in text) > 0.9 * len(text)  # prose, not code


def test_local_corpus_rows_are_its_training_documents_in_order_with_eos():
    directory = prepared_directory(CODE)
    tokens, ends = open_split(directory, "train")
    first, second = list(open_documents(CODE, "train"))[:2]
    assert tokens[:len(first) + len(second) + 2].tolist() == [*first.encode(), 258, *second.encode(), 258]
    assert ends[:2].tolist() == [len(first.encode()) + 1, len(first.encode()) + len(second.encode()) + 2]
    assert prepared_directory(CODE) == directory  # prepared once, then read from the cache
    assert read_manifest(directory)["dtype"] == "uint16"


def test_rows_of_a_step_do_not_depend_on_how_it_is_split_over_processes(tmp_path):
    """One reader of a whole step, or two or four readers of its parts (as processes with their own micro
    batches), see the same rows: for prepared data and for the stream."""
    data = jsonl_data(write_corpus(tmp_path))
    for make in (lambda: training_batches(CODE, ByteTokenizer(), 32, 8, seed=3),
                 lambda: StreamedRows(data, ByteTokenizer(), 16, 8)):
        single = make()
        whole = [single.batch(step, 0, 8) for step in range(5)]
        for parts in (2, 4):
            size = 8 // parts
            readers = [make() for _ in range(parts)]
            for step in range(5):
                rows = torch.cat([readers[r].batch(step, r * size, size) for r in range(parts)])
                assert torch.equal(rows, whole[step])


def test_streamed_rows_pack_every_token_with_eos_and_must_be_read_in_order(tmp_path):
    data = jsonl_data(write_corpus(tmp_path))
    rows = StreamedRows(data, ByteTokenizer(), 16, 2)
    stream = torch.cat([rows.batch(step, 0, 2).flatten() for step in range(30)]).tolist()
    expected = []
    for text in open_documents(data, "train"):
        expected += [*text.encode(), 258]
    assert stream == expected[:len(stream)]
    with pytest.raises(DataError, match="read in order"):
        rows.batch(3, 0, 2)


def test_prepared_rows_visit_every_row_once_per_epoch_in_a_seeded_order():
    batches = training_batches(CODE, ByteTokenizer(), 4096, 16, seed=0)
    n, tokens = batches.order.n, batches.tokens
    assert n == len(tokens) // 4096
    order = batches.order(np.arange(2 * n))
    assert sorted(order[:n].tolist()) == list(range(n)) and sorted(order[n:].tolist()) == list(range(n))
    assert order[:n].tolist() != order[n:].tolist() and order[:n].tolist() != list(range(n))
    for step in (0, 1, n // 16, n // 16 + 1):  # the last crosses into the second epoch
        rows = batches.batch(step, 0, 16)
        for i, row in enumerate(order[step * 16:step * 16 + 16]):
            assert rows[i].tolist() == tokens[row * 4096:(row + 1) * 4096].tolist()
    other_seed = training_batches(CODE, ByteTokenizer(), 4096, 16, seed=1)
    assert not torch.equal(other_seed.batch(0, 0, 16), batches.batch(0, 0, 16))
    # Resuming is positional: a new reader at step 7 gives what this one gives.
    assert batches.state_dict() == {}
    assert torch.equal(training_batches(CODE, ByteTokenizer(), 4096, 16, seed=0).batch(7, 4, 8), batches.batch(7, 4, 8))


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 4097])
def test_the_feistel_order_is_a_seeded_permutation_per_epoch(n):
    order = RowOrder(n, seed=5, permutation_limit=0)  # the order of corpora too large for numpy's permutation
    assert not order.use_permutation
    first, second = order(np.arange(n)), order(np.arange(n, 2 * n))
    assert sorted(first.tolist()) == list(range(n)) and sorted(second.tolist()) == list(range(n))
    if n >= 1000:
        assert first.tolist() != second.tolist() and first.tolist() != list(range(n))
        assert first.tolist() != RowOrder(n, seed=6, permutation_limit=0)(np.arange(n)).tolist()
        assert abs(np.corrcoef(np.arange(n), first)[0, 1]) < 0.1  # not near the identity
    assert order(np.array([n, 3 * n - 1])).tolist() == [second[0], order(np.arange(2 * n, 3 * n))[-1]]


def test_the_numpy_order_is_the_permutation_the_local_corpora_always_used():
    order = RowOrder(50, seed=3)
    assert order.use_permutation
    positions = np.arange(120)
    expected = [np.random.default_rng([3, p // 50]).permutation(50)[p % 50] for p in positions]
    assert order(positions).tolist() == expected


def test_streamed_rows_resume_from_any_process_at_a_step_boundary(tmp_path):
    data = jsonl_data(write_corpus(tmp_path))
    reference = StreamedRows(data, ByteTokenizer(), 32, 4)
    expected = [reference.batch(step, 0, 4) for step in range(40)]  # long enough to cross documents
    first_half, second_half = StreamedRows(data, ByteTokenizer(), 32, 4), StreamedRows(data, ByteTokenizer(), 32, 4)
    for step in range(7):
        first_half.batch(step, 0, 2)
        second_half.batch(step, 2, 2)
    states = [first_half.state_dict(), second_half.state_dict()]
    assert states[0]["next_row"] == states[1]["next_row"] == 7 * 4
    buffer = io.BytesIO()
    torch.save(states[0], buffer)  # what a checkpoint holds
    buffer.seek(0)
    resumed = StreamedRows(data, ByteTokenizer(), 32, 4)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(7, 40):
        assert torch.equal(resumed.batch(step, 0, 4), expected[step])


def test_streamed_rows_start_the_source_again_when_it_runs_out(tmp_path):
    data = jsonl_data(write_corpus(tmp_path, files=1, documents=3))
    rows = StreamedRows(data, ByteTokenizer(), 64, 1)
    epoch_tokens = sum(len(text.encode()) + 1 for text in open_documents(data, "train"))
    for step in range(2 * epoch_tokens // 64 + 1):
        rows.batch(step, 0, 1)
    assert rows.epoch == 2


def test_refusals_of_bad_slices_small_corpora_and_foreign_state(tmp_path):
    batches = training_batches(CODE, ByteTokenizer(), 32, 8, seed=0)
    with pytest.raises(ValueError, match="not within a batch of 8"):
        batches.batch(0, 6, 4)
    with pytest.raises(DataError, match="start it again in a new run dir"):
        batches.load_state_dict({"drawn": {"0": 3}})
    with pytest.raises(DataError, match="lower global_batch_size or seq_len"):
        training_batches(CODE, ByteTokenizer(), 2**22, 16, seed=0)
    streamed = StreamedRows(jsonl_data(write_corpus(tmp_path)), ByteTokenizer(), 32, 8)
    with pytest.raises(DataError, match="older version"):
        streamed.load_state_dict({"documents": {}, "dealt": 9, "pending": {}})


def test_docstrings_are_read_from_the_cache_once_written(tmp_path, monkeypatch):
    files = tuple(path for path in documents_module.stdlib_files() if path.name in ("bisect.py", "colorsys.py"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(documents_module, "stdlib_files", lambda: files)
    stdlib_docstrings.cache_clear()
    try:
        parsed = stdlib_docstrings()
        assert set(parsed) == {str(path) for path in files} and "bisect" in parsed[str(files[0])].lower()
        cache = documents_module.prose_cache_path()
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
    data = jsonl_data(paths, tokenizer=str(tmp_path / "tokenizer"))
    tokenizer = PretrainedTokenizer(data.tokenizer)
    assert tokenizer.eos_token_id == 1 and tokenizer.vocab_size == len(vocabulary)
    rows = eval_batch(data, tokenizer, seq_len=8, n_sequences=4)
    first_document = next(iter(open_documents(data, "validation")))
    assert rows.flatten().tolist() == [vocabulary[word] for word in first_document.split()][:32]
    assert 0 not in rows.tolist()  # every word known: the tokenizer really is the one built above
    assert [ids.tolist() for ids in tokenizer.encode_batch([first_document])] == [tokenizer.encode(first_document)]

    # A data set with its own validation split uses it instead of the hash holdout.
    split_data = replace(data, data_files={"train": paths[0], "validation": paths[1]}, eval_split="validation")
    validation = list(open_documents(split_data, "validation"))
    assert validation == list(open_documents(replace(data, data_files=paths[1], eval_split="train"), "train"))


def test_missing_text_field_and_empty_validation_are_explained(tmp_path):
    data = jsonl_data(write_corpus(tmp_path), text_field="body")
    with pytest.raises(DataError, match=r"text_field='body'.*\['text'\]"):
        next(iter(open_documents(data, "train")))
    with pytest.raises(DataError, match="lower eval_sequences or raise data.holdout_fraction"):
        eval_batch(replace(data, text_field="text"), ByteTokenizer(), seq_len=64, n_sequences=1000)


def test_eval_rows_do_not_depend_on_the_run():
    first = eval_batch(CODE, ByteTokenizer(), 32, 8)
    assert torch.equal(first, eval_batch(CODE, ByteTokenizer(), 32, 8))
    assert first.shape == (8, 32) and int(first.max()) < 259
    assert isinstance(training_batches(CODE, ByteTokenizer(), 32, 8, seed=0), PreparedRows)
