"""The paper's model sizes (Chen et al. 2025, "Parallel Scaling Law for Language Models",
arXiv 2505.10475, Section 3 and Appendix): one Qwen2-style backbone shape shared by all six
sizes, which differ only in width. Plain data: the model presets, the cost model and the sweep
configs all read their shapes from here (importing it through the `models` package still loads
transformers, which the package registers the model with)."""

from __future__ import annotations

from dataclasses import dataclass

# Shared by every size in the paper's grid.
NUM_LAYERS = 36
NUM_ATTENTION_HEADS = 16
NUM_KEY_VALUE_HEADS = 2
VOCAB_SIZE = 151936
MAX_POSITION_EMBEDDINGS = 2048
ROPE_THETA = 10000.0
PREFIX_TOKENS = 48
PAPER_P_VALUES = (1, 2, 4, 8)


@dataclass(frozen=True)
class BackboneShape:
    """The width of one paper size; depth and heads are the shared constants above."""

    name: str
    hidden_size: int
    intermediate_size: int


PAPER_SIZES: dict[str, BackboneShape] = {
    shape.name: shape
    for shape in (
        BackboneShape("0.5B", 896, 4864),
        BackboneShape("0.7B", 1024, 5504),
        BackboneShape("1.1B", 1280, 6912),
        BackboneShape("1.6B", 1536, 8320),
        BackboneShape("2.8B", 2048, 11008),
        BackboneShape("4.4B", 2560, 13824),
    )
}


# A tiny family for local sweeps and tests on a CPU (not in the paper): six widths, as in the paper's grid,
# at a fixed small depth, with a byte-level vocabulary. Like the paper's sizes, they share every shape but
# the width: 8 heads (head_dim = width / 8) and 2 KV heads, intermediate size about 5.4 x width. Widths
# start at 96 because at width 64 a second stream did not lower the loss in a quick trial.
TINY_NUM_LAYERS = 2
TINY_NUM_ATTENTION_HEADS = 8
TINY_NUM_KEY_VALUE_HEADS = 2
TINY_MAX_POSITION_EMBEDDINGS = 256
TINY_PREFIX_TOKENS = 16

# Byte-level vocabulary of the tiny sizes: ids 0-255 are the bytes themselves, then three special tokens.
BYTE_PAD_ID = 256
BYTE_BOS_ID = 257
BYTE_EOS_ID = 258
BYTE_VOCAB_SIZE = 259

TINY_SIZES: dict[str, BackboneShape] = {
    shape.name: shape
    for shape in (
        BackboneShape("tiny-96", 96, 512),
        BackboneShape("tiny-128", 128, 688),
        BackboneShape("tiny-160", 160, 864),
        BackboneShape("tiny-192", 192, 1040),
        BackboneShape("tiny-224", 224, 1216),
        BackboneShape("tiny-256", 256, 1376),
    )
}
