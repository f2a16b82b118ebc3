"""Pieces of the data tests: a BPE tokenizer trained here on the synthetic corpus and saved as a transformers
fast tokenizer (no hub download), and the data config of a local JSON-lines corpus."""

from pathlib import Path

from sweeps.data.config import DataConfig

from train_helpers import WORDS


def bpe_tokenizer(directory: Path, vocab_size: int = 120) -> str:
    """A byte-level BPE tokenizer trained on the test words, with an <eos> token, saved to `directory`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator([" ".join(WORDS)] * 20, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>").save_pretrained(directory)
    return str(directory)


def jsonl_data(paths, tokenizer: str = "bytes", **fields) -> DataConfig:
    values = {"holdout_fraction": 0.1, **fields}
    return DataConfig(name="corpus", source="hub", path="json", data_files=list(paths), tokenizer=tokenizer, **values)
