"""The ParScale language model (Chen et al. 2025, "Parallel Scaling Law for Language Models", arXiv
2505.10475) on transformers 5, built from transformers' own Qwen2 modules.

ParScale runs P parallel streams through one shared Qwen2 backbone:
  1. Input transformation: the token embeddings are repeated P times along the batch axis, batch-major
     (row = b * P + stream; models/streams.py), and in every layer stream i attends to its own learned prefix: extra
     key/value positions in front of the real tokens, always visible, with no rotary embedding, and not
     shifting the real tokens' positions.
  2. Output aggregation: after the final norm, a small MLP reads each token's P hidden states and gives
     softmax weights over the streams (smoothed towards uniform); the weighted sum goes through the LM head
     once.
With P = 1 neither exists and the model is exactly Qwen2.

Unlike the released inference code, the prefix is never run as queries: it is only prepended to the keys
and values (models/attention.py, which also says which masks each attention implementation gets). The KV
cache holds the real tokens only, with the caller's B rows, the streams folded into the head axis
(models/stream_cache.py), so beam search, assisted decoding, left padding, static caches and cache positions
work as in Qwen2; the prefix is prepended again at each step.

Everything the model returns has the caller's B rows: `last_hidden_state` is the aggregated state,
per-layer hidden states are the streams mixed with the aggregator's own per-token weights (so the last is
`last_hidden_state`), and attentions are the streams' mean over the real tokens (models/streams.py: `report_per_row`).

`models/parscale_lm.py` is the same model on any decoder backbone. Parameter names follow the released
checkpoints: Qwen2's, plus `model.layers.{i}.self_attn.prefix_{k,v}`
of shape (P, num_key_value_heads, parscale_n_tokens, head_dim) and `model.aggregate_layer.{0,2}`.
"""

import os

import torch
from torch import nn
from transformers import AutoConfig, GenerationMixin
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2ForCausalLM,
    Qwen2MLP,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults

from .attention import Qwen2ParScaleAttention
from .configuration_parscale import Qwen2ParScaleConfig
from .parscale_parameters import ParScaleParameters, is_parscale_parameter, new_aggregator
from .stream_cache import StreamFoldedCache
from .streams import repeat_for_streams, report_per_row, stream_weights


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
        self.aggregate_layer = None
        if config.parscale_n > 1:
            self.aggregate_layer = new_aggregator(config.hidden_size, config.parscale_n, self.norm.weight)
        self.post_init()

    @merge_with_config_defaults
    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        inputs = {"attention_mask": attention_mask, "position_ids": position_ids, "use_cache": use_cache}
        n_streams = self.config.parscale_n
        if n_streams == 1:
            return super().forward(
                input_ids, cache=cache, inputs_embeds=inputs_embeds, **inputs, **kwargs, return_dict=True
            )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        # Input transformation: every stream reads the same embeddings; row = b * P + stream.
        batch_size = inputs_embeds.shape[0]
        inputs_embeds = inputs_embeds.repeat_interleave(n_streams, dim=0)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # The caller's cache keeps its batch, the streams folded into the head axis (models/stream_cache.py).
        stream_cache = None if cache is None else StreamFoldedCache(cache, n_streams)
        if position_ids is None:
            # The prefix is not in the cache, so the cache length is the real tokens' position.
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)
        position_ids = repeat_for_streams(position_ids, n_streams, batch_size)
        masks = self._real_token_masks(inputs_embeds, attention_mask, stream_cache, position_ids, batch_size)

        outputs = super().forward(
            inputs_embeds=inputs_embeds,
            attention_mask=masks,  # over the real tokens; the attention shows the prefix (attend_after_prefix)
            position_ids=position_ids,
            cache=stream_cache,
            use_cache=use_cache,
            **kwargs,
            return_dict=True,
        )
        # Output aggregation, and the other outputs reported per input row.
        return report_per_row(outputs, cache, self.aggregate_layer, n_streams, self.config.parscale_attn_smooth,
                              self.config.parscale_n_tokens)  # fmt: skip

    def _real_token_masks(self, inputs_embeds, attention_mask, cache, position_ids, batch_size) -> dict:
        """The attention masks over the real tokens for the B*P rows, per layer type, as transformers builds
        them for Qwen2 (None where no mask tensor is needed; see models/attention.py)."""
        n_streams = self.config.parscale_n
        if isinstance(attention_mask, dict):  # prepared by generate() for a static cache, for the B input rows
            return {kind: repeat_for_streams(mask, n_streams, batch_size) for kind, mask in attention_mask.items()}
        mask_inputs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": repeat_for_streams(attention_mask, n_streams, batch_size),
            "cache": cache,
            "position_ids": position_ids,
        }
        masks = {"full_attention": create_causal_mask(**mask_inputs)}
        if self.has_sliding_layers:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_inputs)
        return masks

    def stream_weights(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The aggregator's per-token stream weights (B, T, P) from the (B*P, T, h) final hidden states."""
        return stream_weights(hidden_states, self.aggregate_layer, self.config.parscale_n,
                              self.config.parscale_attn_smooth)  # fmt: skip


class Qwen2ParScaleForCausalLM(ParScaleParameters, Qwen2ParScalePreTrainedModel, Qwen2ForCausalLM, GenerationMixin):
    """Qwen2ForCausalLM over a Qwen2ParScaleModel; forward (loss, logits) and generation are Qwen2's.

    Beyond that: `from_qwen2` adds streams to a Qwen2 model, `freeze_backbone` trains only the ParScale
    parameters, and `save_parscale_params` / `load_parscale_params` keep several P-specific sets for one
    backbone and switch between them."""

    ADD_STREAMS = "from_qwen2"  # named in from_pretrained's refusal

    def __init__(self, config: Qwen2ParScaleConfig):
        # Qwen2ForCausalLM's modules, assembled here (its __init__ would build a Qwen2Model).
        PreTrainedModel.__init__(self, config)
        self.model = Qwen2ParScaleModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

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
            model, loading_info = cls.load_without_parscale_check(source, config=config)
            unexpected = loading_info["unexpected_keys"]
        else:
            model = cls(config).to(device=source.device, dtype=source.dtype)
            missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
            if not all(is_parscale_parameter(name) for name in missing):
                raise ValueError(f"The source lacks backbone weights: {sorted(missing)[:5]}.")
        if unexpected:
            raise ValueError(f"The source has weights a Qwen2 backbone does not: {sorted(unexpected)[:5]}.")
        return model

    def final_hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The final hidden states the head reads (aggregated over the streams), without a cache: for a training
        loss that applies the head itself (sweeps/run/loss.py)."""
        return self.model(input_ids=input_ids, use_cache=False).last_hidden_state

    def _backbone_config(self) -> Qwen2ParScaleConfig:
        return self.config

    def _rebuild_parscale_modules(self, parscale_n: int, parscale_n_tokens: int) -> list[nn.Module]:
        for layer in self.model.layers:
            layer.self_attn.set_prefix_shape(parscale_n, parscale_n_tokens)
        self.model.aggregate_layer = None
        if parscale_n > 1:
            self.model.aggregate_layer = new_aggregator(self.config.hidden_size, parscale_n, self.model.norm.weight)
        return [layer.self_attn for layer in self.model.layers] + list(self.model.aggregate_layer or [])


__all__ = [
    "Qwen2ParScaleForCausalLM",
    "Qwen2ParScaleModel",
    "Qwen2ParScalePreTrainedModel",
    "is_parscale_parameter",
]
