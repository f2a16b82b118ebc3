"""The ParScale language model (Chen et al. 2025, "Parallel Scaling Law for Language Models", arXiv
2505.10475) on transformers 5, built from transformers' own Qwen2 modules.

ParScale runs P parallel streams through one shared Qwen2 backbone:
  1. Input transformation: the token embeddings are repeated P times along the batch axis, stream-major
     (row = stream * B + b), and in every layer stream i attends to its own learned prefix: extra
     key/value positions in front of the real tokens, always visible, with no rotary embedding, and not
     shifting the real tokens' positions.
  2. Output aggregation: after the final norm, a small MLP reads each token's P hidden states and gives
     softmax weights over the streams (smoothed towards uniform); the weighted sum goes through the LM head
     once.
With P = 1 neither exists and the model is exactly Qwen2.

Unlike the released inference code, the prefix is never run as queries: it is only prepended to the keys
and values, and the attention mask gains columns for it that every query sees. The KV cache holds the
real tokens only (P * B rows), so beam search, left padding and cache positions work as in Qwen2; the
prefix is prepended again at each step.

Parameter names follow the released checkpoints: Qwen2's, plus `model.layers.{i}.self_attn.prefix_{k,v}`
of shape (P, num_key_value_heads, parscale_n_tokens, head_dim) and `model.aggregate_layer.{0,2}`.
"""

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2DecoderLayer,
    Qwen2ForCausalLM,
    Qwen2MLP,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)
from transformers.utils.generic import merge_with_config_defaults

from .configuration_parscale import Qwen2ParScaleConfig


def is_parscale_parameter(name: str) -> bool:
    """Whether a parameter name belongs to ParScale (a prefix or the aggregator) rather than the backbone."""
    return name.endswith((".prefix_k", ".prefix_v")) or ".aggregate_layer." in name


class _PrefixedCache:
    """What a prefixed attention layer passes to Qwen2Attention as its cache: stores the real tokens'
    keys/values in the real cache (if any) and hands them back with each stream's prefix in front.

    Prepending after Qwen2Attention has applied the rotary embedding is what keeps the prefix free of
    position information. Built per call inside the attention module, so it survives gradient
    checkpointing, which drops the cache argument at the decoder-layer level."""

    def __init__(self, prefix_k: torch.Tensor, prefix_v: torch.Tensor, cache):
        self.prefix_k, self.prefix_v, self.cache = prefix_k, prefix_v, cache

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.cache is not None:
            key_states, value_states = self.cache.update(key_states, value_states, layer_idx, *args, **kwargs)
        return _prepend_per_stream(self.prefix_k, key_states), _prepend_per_stream(self.prefix_v, value_states)


def _prepend_per_stream(prefix: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """(P, heads, n, d) prefix and (P*B, heads, t, d) states -> (P*B, heads, n + t, d), stream-major rows."""
    n_streams = prefix.shape[0]
    per_row = prefix.to(states.dtype).unsqueeze(1).expand(-1, states.shape[0] // n_streams, -1, -1, -1)
    return torch.cat([per_row.flatten(0, 1), states], dim=2)


def _show_prefix(mask, n_prefix: int, attn_implementation: str):
    """Extends the real tokens' attention mask with `n_prefix` columns in front that every query sees."""
    if mask is None and "flash" in attn_implementation:
        # Flash attention's causal mask is aligned to the bottom-right corner, so every query already sees
        # the n_prefix keys in front of the real ones.
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(
            "ParScale with parscale_n > 1 supports the 'sdpa', 'eager' and flash attention implementations, "
            f"not {attn_implementation!r}; load the model with attn_implementation='sdpa'."
        )
    if mask.ndim == 2:  # flash attention's padding mask (rows, kv)
        return torch.cat([mask.new_ones(mask.shape[0], n_prefix), mask], dim=1)
    # A causal mask without padding is one row expanded over the batch: extend that row only.
    rows = mask[:1] if mask.stride(0) == 0 else mask
    visible = True if mask.dtype == torch.bool else 0.0  # bool for sdpa, additive float for eager
    prefix_columns = torch.full((*rows.shape[:-1], n_prefix), visible, dtype=mask.dtype, device=mask.device)
    return torch.cat([prefix_columns, rows], dim=-1).expand(mask.shape[0], -1, -1, -1)


class Qwen2ParScaleAttention(Qwen2Attention):
    """Qwen2 attention whose keys and values start with a learned prefix per stream (when P > 1)."""

    def __init__(self, config: Qwen2ParScaleConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.set_prefix_shape(config.parscale_n, config.parscale_n_tokens)

    def set_prefix_shape(self, n_streams: int, n_tokens: int):
        """(Re)creates uninitialised prefixes for `n_streams` streams, or removes them when n_streams is 1."""
        if n_streams == 1:
            self.prefix_k = self.prefix_v = None
            return
        like = self.k_proj.weight
        shape = (n_streams, self.config.num_key_value_heads, n_tokens, self.head_dim)
        self.prefix_k = nn.Parameter(torch.empty(shape, device=like.device, dtype=like.dtype))
        self.prefix_v = nn.Parameter(torch.empty(shape, device=like.device, dtype=like.dtype))

    def forward(self, hidden_states, position_embeddings, attention_mask, cache=None, **kwargs):
        if self.prefix_k is not None:
            cache = _PrefixedCache(self.prefix_k, self.prefix_v, cache)
        return super().forward(hidden_states, position_embeddings, attention_mask, cache=cache, **kwargs)


class Qwen2ParScaleDecoderLayer(Qwen2DecoderLayer):
    """Qwen2's decoder layer with the prefixed attention; the forward pass is Qwen2's."""

    def __init__(self, config: Qwen2ParScaleConfig, layer_idx: int):
        # Qwen2DecoderLayer's modules, assembled here rather than by its __init__ so that the attention
        # module is not built twice.
        GradientCheckpointingLayer.__init__(self)
        self.hidden_size = config.hidden_size
        self.self_attn = Qwen2ParScaleAttention(config=config, layer_idx=layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


def _new_aggregator(config: Qwen2ParScaleConfig, like: torch.Tensor) -> nn.Sequential:
    """Linear(P*h -> h), SiLU, Linear(h -> P): per-token stream logits (uninitialised; see _init_weights)."""
    hidden, n_streams = config.hidden_size, config.parscale_n
    factory = {"device": like.device, "dtype": like.dtype}
    return nn.Sequential(
        nn.Linear(n_streams * hidden, hidden, **factory), nn.SiLU(), nn.Linear(hidden, n_streams, **factory)
    )


class Qwen2ParScalePreTrainedModel(Qwen2PreTrainedModel):
    """Qwen2's PreTrainedModel settings, adapted to the ParScale modules, and their initialisation."""

    config: Qwen2ParScaleConfig
    _no_split_modules = ["Qwen2ParScaleDecoderLayer"]
    # Flex attention's block masks cannot be extended with the prefix columns.
    _supports_flex_attn = False
    _can_record_outputs = {"hidden_states": Qwen2ParScaleDecoderLayer, "attentions": Qwen2ParScaleAttention}

    def _init_weights(self, module):
        super()._init_weights(module)  # Qwen2's rules; the aggregator's Linear layers are covered there
        if isinstance(module, Qwen2ParScaleAttention) and module.prefix_k is not None:
            init.normal_(module.prefix_k, mean=0.0, std=self.config.parscale_prefix_init_std)
            init.normal_(module.prefix_v, mean=0.0, std=self.config.parscale_prefix_init_std)


class Qwen2ParScaleModel(Qwen2ParScalePreTrainedModel, Qwen2Model):
    """Qwen2Model with P streams: repeats the input P times, runs Qwen2Model's forward pass over all streams
    with the prefixes shown in the attention mask, and aggregates the streams' final hidden states."""

    def __init__(self, config: Qwen2ParScaleConfig):
        # Qwen2Model's modules, assembled here (Qwen2Model.__init__ would build Qwen2's decoder layers).
        PreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [Qwen2ParScaleDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        self.aggregate_layer = _new_aggregator(config, self.norm.weight) if config.parscale_n > 1 else None
        self.post_init()

    @merge_with_config_defaults
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        n_streams = self.config.parscale_n
        if n_streams == 1:
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                inputs_embeds=inputs_embeds,
                use_cache=use_cache,
                **kwargs,
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if isinstance(attention_mask, dict):
            raise ValueError(
                "With parscale_n > 1 the attention mask must be a 2D padding mask (or 4D), not a prepared "
                "mask mapping as generate() builds for static caches; generate with the default dynamic "
                "cache (no cache_implementation)."
            )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)

        # Input transformation: every stream reads the same embeddings; row = stream * B + b.
        inputs_embeds = inputs_embeds.repeat(n_streams, 1, 1)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            # The prefix is not in the cache, so the cache length is the real tokens' position.
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)
        else:
            position_ids = position_ids.repeat(n_streams, 1)
        if attention_mask is not None and attention_mask.ndim == 2 and attention_mask.all():
            attention_mask = None  # no padding: keeps the mask one row expanded over the batch (see _show_prefix)
        if attention_mask is not None:
            attention_mask = attention_mask.repeat(n_streams, *[1] * (attention_mask.ndim - 1))

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            allow_is_causal_skip=False,  # sdpa's is_causal cannot express the always-visible prefix
        )
        outputs = super().forward(
            inputs_embeds=inputs_embeds,
            attention_mask={
                "full_attention": _show_prefix(
                    causal_mask, self.config.parscale_n_tokens, self.config._attn_implementation
                )
            },
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        outputs.last_hidden_state = self.aggregate_streams(outputs.last_hidden_state)
        return outputs

    def aggregate_streams(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Output aggregation: (P*B, T, h) final hidden states -> (B, T, h) per-token weighted sum."""
        n_streams, smoothing = self.config.parscale_n, self.config.parscale_attn_smooth
        streams = hidden_states.unflatten(0, (n_streams, -1)).permute(1, 2, 0, 3)  # (B, T, P, h)
        # The aggregator reads the P states concatenated hidden-major, stream-minor (feature h * P + i), as
        # in the released checkpoints; its softmax is taken in float32.
        logits = self.aggregate_layer(streams.transpose(2, 3).flatten(2))
        weights = torch.softmax(logits.float(), dim=-1)
        weights = weights * (1 - smoothing) + smoothing / n_streams
        return (streams * weights.unsqueeze(-1)).sum(dim=2).to(hidden_states.dtype)


class Qwen2ParScaleForCausalLM(Qwen2ParScalePreTrainedModel, Qwen2ForCausalLM):
    """Qwen2ForCausalLM over a Qwen2ParScaleModel; forward (loss, logits) and generation are Qwen2's.

    Beyond that: `from_qwen2` adds streams to a Qwen2 model, `freeze_backbone` trains only the ParScale
    parameters, and `save_parscale_params` / `load_parscale_params` keep several P-specific sets for one
    backbone and switch between them."""

    def __init__(self, config: Qwen2ParScaleConfig):
        # Qwen2ForCausalLM's modules, assembled here (its __init__ would build a Qwen2Model).
        PreTrainedModel.__init__(self, config)
        self.model = Qwen2ParScaleModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _reorder_cache(self, cache, beam_idx: torch.LongTensor):
        # Beam search selects among the B rows of the batch; the cache holds P * B rows, stream-major, and
        # every stream follows the same selection.
        n_rows = beam_idx.numel()
        streams = torch.arange(self.config.parscale_n, device=beam_idx.device)
        cache.reorder_cache((streams[:, None] * n_rows + beam_idx[None, :]).flatten())
        return cache

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """PreTrainedModel.from_pretrained, refusing checkpoints that lack the prefixes or the aggregator
        their config asks for (rather than silently initialising them at random)."""
        wants_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        missing = sorted(name for name in loading_info["missing_keys"] if is_parscale_parameter(name))
        if missing:
            raise ValueError(
                f"The checkpoint {pretrained_model_name_or_path} has parscale_n={model.config.parscale_n} in its "
                f"config but lacks {len(missing)} ParScale weights ({', '.join(missing[:3])}, ...). To add "
                "streams to a Qwen2 checkpoint, use Qwen2ParScaleForCausalLM.from_qwen2(path, parscale_n=P), "
                "which initialises them; for a released ParScale checkpoint, re-download its safetensors files."
            )
        return (model, loading_info) if wants_loading_info else model

    @classmethod
    def from_qwen2(cls, source, parscale_n: int, **config_overrides) -> "Qwen2ParScaleForCausalLM":
        """Two-stage training's second stage: a ParScale model with `parscale_n` streams whose backbone is
        copied from `source` (a Qwen2ForCausalLM, a P = 1 Qwen2ParScaleForCausalLM, or a directory holding
        either) and whose prefixes and aggregator are newly initialised. `config_overrides` set further
        config fields, e.g. parscale_n_tokens."""
        if isinstance(source, (str, os.PathLike)):
            backbone_config = AutoConfig.from_pretrained(source).to_dict()
        else:
            backbone_config = source.config.to_dict()
        if backbone_config.get("parscale_n", 1) != 1:
            raise ValueError(
                f"from_qwen2 copies a single-stream backbone, but the source has parscale_n="
                f"{backbone_config['parscale_n']}; switch it to P = 1 first with load_parscale_params."
            )
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            backbone_config.pop(key, None)
        config = Qwen2ParScaleConfig(**{**backbone_config, **config_overrides, "parscale_n": parscale_n})

        if isinstance(source, (str, os.PathLike)):
            # The unchecked loader: the ParScale weights are missing on purpose and get initialised.
            model, loading_info = super().from_pretrained(source, config=config, output_loading_info=True)
            unexpected = loading_info["unexpected_keys"]
        else:
            model = cls(config).to(device=source.device, dtype=source.dtype)
            missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
            if not all(is_parscale_parameter(name) for name in missing):
                raise ValueError(f"The source lacks backbone weights: {sorted(missing)[:5]}.")
        if unexpected:
            raise ValueError(f"The source has weights a Qwen2 backbone does not: {sorted(unexpected)[:5]}.")
        return model

    def parscale_state_dict(self) -> dict[str, torch.Tensor]:
        """The ParScale parameters only (prefixes and aggregator), by their full names."""
        return {name: param for name, param in self.named_parameters() if is_parscale_parameter(name)}

    def freeze_backbone(self):
        """The paper's parameter-efficient mode: only the prefixes and the aggregator keep training."""
        if self.config.parscale_n == 1:
            raise ValueError(
                "freeze_backbone() would leave nothing to train: with parscale_n=1 the model has no ParScale "
                "parameters. Add streams first with Qwen2ParScaleForCausalLM.from_qwen2(model, parscale_n=P)."
            )
        for name, param in self.named_parameters():
            param.requires_grad_(is_parscale_parameter(name))

    def save_parscale_params(self, path: str | os.PathLike):
        """Writes the ParScale parameters and their P to one small safetensors file."""
        tensors = {name: param.detach().contiguous() for name, param in self.parscale_state_dict().items()}
        save_file(tensors, path, metadata=self._parscale_metadata())

    def load_parscale_params(self, path: str | os.PathLike):
        """Loads a file written by `save_parscale_params`, switching the model to that file's P (and prefix
        length and smoothing). The backbone is untouched and must be the one the file was trained with."""
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "parscale_n" not in metadata:
            raise ValueError(f"{path} is not a ParScale parameter file (no parscale_n in its metadata).")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
            if int(metadata[key]) != getattr(self.config, key):
                raise ValueError(
                    f"{path} was saved for a backbone with {key}={metadata[key]}, this model has "
                    f"{getattr(self.config, key)}; load it into the backbone it was trained with."
                )
        self.set_parscale_n(int(metadata["parscale_n"]), int(metadata["parscale_n_tokens"]))
        self.config.parscale_attn_smooth = float(metadata["parscale_attn_smooth"])
        tensors = load_file(path)
        expected = self.parscale_state_dict()
        if set(tensors) != set(expected):
            raise ValueError(
                f"{path} does not hold this model's ParScale parameters: missing "
                f"{sorted(set(expected) - set(tensors))[:3]}, unexpected {sorted(set(tensors) - set(expected))[:3]}."
            )
        with torch.no_grad():
            for name, param in expected.items():
                param.copy_(tensors[name])

    def set_parscale_n(self, parscale_n: int, parscale_n_tokens: int | None = None):
        """Switches to `parscale_n` streams with newly initialised prefixes and aggregator (or none for P = 1);
        nothing changes if P and the prefix length are already these."""
        parscale_n_tokens = parscale_n_tokens or self.config.parscale_n_tokens
        if (parscale_n, parscale_n_tokens) == (self.config.parscale_n, self.config.parscale_n_tokens):
            return
        previous = self.config.parscale_n, self.config.parscale_n_tokens
        self.config.parscale_n, self.config.parscale_n_tokens = parscale_n, parscale_n_tokens
        try:
            self.config.validate_parscale()
        except ValueError:
            self.config.parscale_n, self.config.parscale_n_tokens = previous
            raise
        new_modules = []
        for layer in self.model.layers:
            layer.self_attn.set_prefix_shape(parscale_n, parscale_n_tokens)
            new_modules.append(layer.self_attn)
        if parscale_n == 1:
            self.model.aggregate_layer = None
        else:
            self.model.aggregate_layer = _new_aggregator(self.config, self.model.norm.weight)
            new_modules.extend(self.model.aggregate_layer)
        with torch.no_grad():
            for module in new_modules:
                self._init_weights(module)

    def _parscale_metadata(self) -> dict[str, str]:
        keys = ("parscale_n", "parscale_n_tokens", "parscale_attn_smooth")
        keys += ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        return {key: str(getattr(self.config, key)) for key in keys}


__all__ = [
    "Qwen2ParScaleForCausalLM",
    "Qwen2ParScaleModel",
    "Qwen2ParScalePreTrainedModel",
    "is_parscale_parameter",
]
