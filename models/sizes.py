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


def by_name(*shapes: BackboneShape) -> dict[str, BackboneShape]:
    return {shape.name: shape for shape in shapes}


PAPER_SIZES: dict[str, BackboneShape] = by_name(
    BackboneShape("0.5B", 896, 4864),
    BackboneShape("0.7B", 1024, 5504),
    BackboneShape("1.1B", 1280, 6912),
    BackboneShape("1.6B", 1536, 8320),
    BackboneShape("2.8B", 2048, 11008),
    BackboneShape("4.4B", 2560, 13824),
)


# A tiny family for local sweeps and tests on a CPU (not in the paper): six widths, as in the paper's grid,
# spanning 4x in width (the paper: 2.9x), at a fixed small depth, with a byte-level vocabulary. Like the
# paper's sizes they share every shape but the width: 4 heads (head_dim = width / 4), 2 KV heads, intermediate
# size about 5.4 x width. The prefix is 4 tokens: the paper's 48 prefix tokens are 2% of its 2048-token rows,
# and with the tiny grid's 64-token rows 4 tokens lowered the loss of P = 2 and 4 against 16 in trials at
# widths 64 and 128.
TINY_NUM_LAYERS = 2
TINY_NUM_ATTENTION_HEADS = 4
TINY_NUM_KEY_VALUE_HEADS = 2
TINY_MAX_POSITION_EMBEDDINGS = 256
TINY_PREFIX_TOKENS = 4

# Byte-level vocabulary of the tiny sizes: ids 0-255 are the bytes themselves, then three special tokens.
BYTE_PAD_ID = 256
BYTE_BOS_ID = 257
BYTE_EOS_ID = 258
BYTE_VOCAB_SIZE = 259

TINY_SIZES: dict[str, BackboneShape] = by_name(
    BackboneShape("tiny-32", 32, 176),
    BackboneShape("tiny-48", 48, 256),
    BackboneShape("tiny-64", 64, 344),
    BackboneShape("tiny-80", 80, 432),
    BackboneShape("tiny-96", 96, 512),
    BackboneShape("tiny-128", 128, 688),
)

# The small family (`scale=small`, not in the paper): the tiny family's shapes from tiny-128's width up to
# 1.6x it. The tiny grid's search found P helping at every P only at width 128 (experiments/tiny_search_trials.csv);
# these widths keep the same depth, heads and byte vocabulary so that only N changes.
SMALL_SIZES: dict[str, BackboneShape] = by_name(
    BackboneShape("small-128", 128, 688),
    BackboneShape("small-144", 144, 776),
    BackboneShape("small-160", 160, 864),
    BackboneShape("small-176", 176, 952),
    BackboneShape("small-192", 192, 1040),
    BackboneShape("small-208", 208, 1120),
)

# The sizes with the byte-level vocabulary and the tiny family's depth and heads.
BYTE_LEVEL_SIZES: dict[str, BackboneShape] = {**TINY_SIZES, **SMALL_SIZES}
