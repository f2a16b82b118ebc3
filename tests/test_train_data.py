"""The data path: the standard-library corpora, the deterministic hash split, the same `datasets` streaming
loader on local files with a tokenizer read from a directory, sharding without overlap, and resuming from a
saved position."""

import io
import itertools
from dataclasses import replace

import pytest
import torch

from sweeps.config import DataConfig
from sweeps.data import (
    ByteTokenizer,
    DataError,
    PretrainedTokenizer,
    ShardedBatches,
    eval_batch,
    open_documents,
    split_of,
)
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
    batches = ShardedBatches(open_documents(data, "train", 0), tokenizer, 16, 2, num_shards=1, shards=range(1))
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

    def batches(shards):
        return ShardedBatches(open_documents(CODE, "train", 0), tokenizer, 64, 2, num_shards=4, shards=shards)

    single, first, second = batches(range(4)), batches(range(0, 2)), batches(range(2, 4))
    for _ in range(5):
        for shard in range(4):
            process = first if shard < 2 else second
            assert torch.equal(single.next(shard), process.next(shard))
    # Documents are dealt round-robin: the first eight go to shards 0, 1, 2, 3, 0, 1, 2, 3.
    documents = list(itertools.islice(open_documents(CODE, "train", 0), 8))
    expected_start = torch.tensor(list(documents[2].encode()[:64]))
    assert torch.equal(batches(range(2, 3)).next(2)[0], expected_start)


@pytest.mark.parametrize("source", ["stdlib-code", "json"])
def test_resume_from_a_saved_position_continues_the_same_batches(tmp_path, source):
    data = CODE if source == "stdlib-code" else DataConfig(
        name="corpus", source="hub", path="json", data_files=write_corpus(tmp_path), holdout_fraction=0.1
    )
    tokenizer = ByteTokenizer()

    def batches():
        return ShardedBatches(open_documents(data, "train", 3), tokenizer, 32, 2, num_shards=3, shards=range(3))

    original = batches()
    for step in range(7):
        original.next(step % 3)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = batches()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(7, 40):  # long enough to cross file boundaries of the local corpus
        assert torch.equal(original.next(step % 3), resumed.next(step % 3))


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
