"""Configs for the paper's six sizes and the tiny CPU family at any P and on any backbone family, the model each
config builds, and its parameter counts.

`parscale_config("1.6B", parscale_n=4)` is the paper's 1.6B backbone with four streams; the same configs
are in conf/model/*.yaml for Hydra (read back with `config_from_mapping`). `backbone` names the decoder family
(a transformers model_type): the default, qwen2, is the released layout (`Qwen2ParScaleConfig`, built as
`Qwen2ParScaleForCausalLM`); any other (qwen3, llama, mistral, ...) is that family's own config of the same
shape inside a `ParScaleConfig`, built as `ParScaleForCausalLM`. `new_model` builds either, and
`count_parameters` builds it on the meta device, so even 4.4B at P = 8 is counted without allocating memory."""

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from . import sizes
from .configuration_parscale import ParScaleConfig, Qwen2ParScaleConfig
from .modeling_parscale import Qwen2ParScaleForCausalLM, is_parscale_parameter
from .parscale_lm import ParScaleForCausalLM

DEFAULT_BACKBONE = "qwen2"
PARSCALE_FIELDS = tuple(field.name for field in fields(ParScaleConfig) if field.name.startswith("parscale_"))


def parscale_config(size: str, parscale_n: int = 1, backbone: str = DEFAULT_BACKBONE,
                    **overrides) -> Qwen2ParScaleConfig | ParScaleConfig:
    """The config of a named size ("0.5B" ... "4.4B" from the paper, "tiny-32" ... "tiny-128",
    "small-128" ... "small-208") with `parscale_n` streams on the `backbone` family; `overrides` set any
    other config field."""
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
    return _assemble(backbone, {**fields_of_size, **overrides})


def config_from_mapping(mapping: Mapping) -> Qwen2ParScaleConfig | ParScaleConfig:
    """A config from a conf/model/*.yaml mapping (e.g. Hydra's `OmegaConf.to_container(cfg.model)`): `backbone`
    (default qwen2) picks the family, and every other key but `name` must be a field of that family's config
    or a parscale_* field, so that a misspelt key fails instead of being ignored."""
    values = {key: value for key, value in mapping.items() if key not in ("name", "backbone")}
    backbone = mapping.get("backbone") or DEFAULT_BACKBONE
    config_class = Qwen2ParScaleConfig if backbone == DEFAULT_BACKBONE else backbone_config_class(backbone)
    known_fields = {field.name for field in fields(config_class)} | set(PARSCALE_FIELDS)
    unknown = sorted(set(values) - known_fields)
    if unknown:
        raise ValueError(
            f"Unknown model config keys {unknown}; the keys must be fields of {config_class.__name__} "
            f"(e.g. hidden_size), parscale_* fields, `backbone` or `name`."
        )
    return _assemble(backbone, values)


def backbone_config_class(backbone: str) -> type:
    """The config class of a transformers decoder family, e.g. Qwen3Config for "qwen3"; ValueError for a name
    transformers has no causal LM of."""
    if backbone not in CONFIG_MAPPING or backbone not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"Unknown backbone {backbone!r}; choose a transformers decoder model_type such as "
                         f"qwen2 (the default, the released layout), qwen3, llama or mistral.")
    return CONFIG_MAPPING[backbone]


def _assemble(backbone: str, values: dict) -> Qwen2ParScaleConfig | ParScaleConfig:
    """The released layout's flat config for qwen2; for another family, its own config with the shape fields
    inside a ParScaleConfig with the parscale_* ones."""
    if backbone == DEFAULT_BACKBONE:
        return Qwen2ParScaleConfig(**values)
    config_class = backbone_config_class(backbone)
    shape = {key: value for key, value in values.items() if key not in PARSCALE_FIELDS}
    if "head_dim" in {field.name for field in fields(config_class)} and "head_dim" not in shape:
        # Qwen3's default head_dim is 128 whatever the width: a named size keeps its hidden / heads unless
        # the mapping sets head_dim.
        shape["head_dim"] = shape["hidden_size"] // shape["num_attention_heads"]
    parscale = {key: value for key, value in values.items() if key in PARSCALE_FIELDS}
    return ParScaleConfig(backbone_config=config_class(**shape), **parscale)


def backbone_of(config: Qwen2ParScaleConfig | ParScaleConfig):
    """The config that holds the backbone's shape (hidden_size, head_dim, ...): the flat Qwen2 config itself,
    or a ParScaleConfig's backbone_config."""
    return config.backbone_config if isinstance(config, ParScaleConfig) else config


def set_attention(config: Qwen2ParScaleConfig | ParScaleConfig, implementation: str) -> None:
    """The attention implementation the model is built with (sdpa, eager, flash_attention_2); a wrapped
    backbone reads it from its own config (and adds the streams' prefix to it at P > 1)."""
    config._attn_implementation = implementation
    backbone_of(config)._attn_implementation = implementation


def new_model(config: Qwen2ParScaleConfig | ParScaleConfig) -> Qwen2ParScaleForCausalLM | ParScaleForCausalLM:
    """The model a config builds: the released Qwen2 layout or the wrapper of another family."""
    model_class = ParScaleForCausalLM if isinstance(config, ParScaleConfig) else Qwen2ParScaleForCausalLM
    return model_class(config)


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of one config. `embedding` is the vocabulary-sized matrices (the token embedding,
    plus the LM head when it is not tied to it); `non_embedding` is everything else, the paper's N;
    `parscale` is the part of non_embedding that P > 1 adds (prefixes and aggregator)."""

    total: int
    embedding: int
    non_embedding: int
    parscale: int


def count_parameters(config: Qwen2ParScaleConfig | ParScaleConfig) -> ParameterCounts:
    with torch.device("meta"):
        model = new_model(config)
    # named_parameters() lists a tied LM head once, under the embedding's name.
    numels = {name: param.numel() for name, param in model.named_parameters()}
    embedding = numels["model.embed_tokens.weight"] + numels.get("lm_head.weight", 0)
    total = sum(numels.values())
    parscale = sum(numel for name, numel in numels.items() if is_parscale_parameter(name))
    return ParameterCounts(total=total, embedding=embedding, non_embedding=total - embedding, parscale=parscale)


__all__ = [
    "DEFAULT_BACKBONE",
    "ParameterCounts",
    "backbone_config_class",
    "backbone_of",
    "config_from_mapping",
    "count_parameters",
    "new_model",
    "parscale_config",
    "set_attention",
]
