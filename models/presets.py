"""Configs for the paper's six sizes and the tiny CPU family at any P, and their parameter counts.

`parscale_config("1.6B", parscale_n=4)` is the paper's 1.6B backbone with four streams; the same configs
are in conf/model/*.yaml for Hydra (read back with `config_from_mapping`). `count_parameters` builds the
model on the meta device, so even 4.4B at P = 8 is counted without allocating memory."""

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from . import sizes
from .configuration_parscale import Qwen2ParScaleConfig
from .modeling_parscale import Qwen2ParScaleForCausalLM, is_parscale_parameter


def parscale_config(size: str, parscale_n: int = 1, **overrides) -> Qwen2ParScaleConfig:
    """The config of a named size ("0.5B" ... "4.4B" from the paper, "tiny-32" ... "tiny-128",
    "small-128" ... "small-208") with
    `parscale_n` streams; `overrides` set any other config field."""
    if size in sizes.PAPER_SIZES:
        shape = sizes.PAPER_SIZES[size]
        fields_of_size = {
            "vocab_size": sizes.VOCAB_SIZE,
            "num_hidden_layers": sizes.NUM_LAYERS,
            "num_attention_heads": sizes.NUM_ATTENTION_HEADS,
            "num_key_value_heads": sizes.NUM_KEY_VALUE_HEADS,
            "max_position_embeddings": sizes.MAX_POSITION_EMBEDDINGS,
            "rope_parameters": {"rope_type": "default", "rope_theta": sizes.ROPE_THETA},
            "parscale_n_tokens": sizes.PREFIX_TOKENS,
        }
    elif size in sizes.BYTE_LEVEL_SIZES:
        shape = sizes.BYTE_LEVEL_SIZES[size]
        fields_of_size = {
            "vocab_size": sizes.BYTE_VOCAB_SIZE,
            "pad_token_id": sizes.BYTE_PAD_ID,
            "bos_token_id": sizes.BYTE_BOS_ID,
            "eos_token_id": sizes.BYTE_EOS_ID,
            "num_hidden_layers": sizes.TINY_NUM_LAYERS,
            "num_attention_heads": sizes.TINY_NUM_ATTENTION_HEADS,
            "num_key_value_heads": sizes.TINY_NUM_KEY_VALUE_HEADS,
            "max_position_embeddings": sizes.TINY_MAX_POSITION_EMBEDDINGS,
            "rope_parameters": {"rope_type": "default", "rope_theta": sizes.ROPE_THETA},
            "parscale_n_tokens": sizes.TINY_PREFIX_TOKENS,
        }
    else:
        known = ", ".join([*sizes.PAPER_SIZES, *sizes.BYTE_LEVEL_SIZES])
        raise ValueError(f"Unknown model size {size!r}; choose one of: {known}.")
    fields_of_size.update(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        parscale_attn_smooth=0.1,
        parscale_n=parscale_n,
    )
    return Qwen2ParScaleConfig(**{**fields_of_size, **overrides})


def config_from_mapping(mapping: Mapping) -> Qwen2ParScaleConfig:
    """A config from a conf/model/*.yaml mapping (e.g. Hydra's `OmegaConf.to_container(cfg.model)`): every
    key but `name` must be a config field, so that a misspelt key fails instead of being ignored."""
    known_fields = {field.name for field in fields(Qwen2ParScaleConfig)}
    values = {key: value for key, value in mapping.items() if key != "name"}
    unknown = sorted(set(values) - known_fields)
    if unknown:
        raise ValueError(
            f"Unknown model config keys {unknown}; the keys must be fields of Qwen2ParScaleConfig "
            f"(e.g. hidden_size, parscale_n) or `name`."
        )
    return Qwen2ParScaleConfig(**values)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of one config. `embedding` is the vocabulary-sized matrices (the token embedding,
    plus the LM head when it is not tied to it); `non_embedding` is everything else, the paper's N;
    `parscale` is the part of non_embedding that P > 1 adds (prefixes and aggregator)."""

    total: int
    embedding: int
    non_embedding: int
    parscale: int


def count_parameters(config: Qwen2ParScaleConfig) -> ParameterCounts:
    with torch.device("meta"):
        model = Qwen2ParScaleForCausalLM(config)
    # named_parameters() lists a tied LM head once, under the embedding's name.
    numels = {name: param.numel() for name, param in model.named_parameters()}
    embedding = numels["model.embed_tokens.weight"] + numels.get("lm_head.weight", 0)
    total = sum(numels.values())
    parscale = sum(numel for name, numel in numels.items() if is_parscale_parameter(name))
    return ParameterCounts(total=total, embedding=embedding, non_embedding=total - embedding, parscale=parscale)


__all__ = ["ParameterCounts", "config_from_mapping", "count_parameters", "parscale_config"]
