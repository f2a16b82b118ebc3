"""ParScale on any transformers decoder-only causal LM: `ParScaleForCausalLM(ParScaleConfig(backbone_config=...))`.

The backbone (Qwen2, Qwen3, Llama, Mistral, Gemma, ...) is built by transformers from its own config and runs
its own forward pass; ParScale adds, at P > 1 only:
  - the input repeated P times, batch-major (row = b * P + stream);
  - per-layer key/value prefixes, attached to each attention module and shown by a registered attention
    implementation "parscale_<impl>" (sdpa, eager, flash) that prepends them after the rotary embedding and
    the cache update, then calls the backbone's own attention function of <impl> (models/attention.py); the
    attention modules alone see that name (`StreamAttentionConfig`), the rest of the backbone its own;
  - the KV cache kept with the caller's batch, the streams folded into the head axis (models/stream_cache.py);
  - the aggregator before the head, as in the released checkpoints (models/parscale_parameters.py).
With P = 1 none of this exists and the forward pass is the backbone's model and head.

Parameter names are the backbone's (`model.*`, `lm_head.weight`) plus the released checkpoints' ParScale names,
so a backbone checkpoint loads into it directly (`from_backbone`) and a Qwen2ParScale state dict loads into a
Qwen2-backed one.
"""

import os
import sys
from typing import Unpack

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin
from transformers import initialization as init
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.models.llama.modeling_llama import eager_attention_forward as plain_eager_attention
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .attention import attach_prefixes, attend_after_prefix
from .configuration_parscale import ParScaleConfig
from .parscale_parameters import ParScaleParameters, is_parscale_parameter, new_aggregator
from .stream_cache import StreamFoldedCache
from .streams import prepend_per_stream, repeat_for_streams, report_per_row

STREAM_ATTENTION = "parscale_"
# from_pretrained's options that say where a checkpoint's config.json is found.
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


def _stream_attention(implementation: str):
    """The attention function registered as "parscale_<implementation>"."""

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        if implementation == "eager":  # the backbone family's own eager function (softcapping etc.)
            function = getattr(sys.modules[type(module).__module__], "eager_attention_forward", plain_eager_attention)
        else:
            function = ALL_ATTENTION_FUNCTIONS[implementation]
        key = prepend_per_stream(module.prefix_k, key)
        value = prepend_per_stream(module.prefix_v, value)
        return attend_after_prefix(
            module, query, key, value, attention_mask, implementation, function, dropout, scaling, **kwargs
        )

    return attention


def register_stream_attention():
    """Registers "parscale_<impl>" attention and mask functions for every registered implementation."""
    for implementation in ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]:
        if implementation.startswith((STREAM_ATTENTION, "paged")) or implementation not in ALL_MASK_ATTENTION_FUNCTIONS:
            continue
        name = STREAM_ATTENTION + implementation
        ALL_ATTENTION_FUNCTIONS.register(name, _stream_attention(implementation))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[implementation])


class StreamAttentionConfig:
    """The backbone's config as its attention modules see it at P > 1: the same object in every field but
    `_attn_implementation`, which names the stream function "parscale_<impl>" of the backbone's current <impl>.
    The backbone itself keeps the plain name, so its masks, `set_attn_implementation` and transformers' own
    checks (attention probabilities need "eager") see the implementation the user chose."""

    def __init__(self, backbone_config):
        self.__dict__["backbone_config"] = backbone_config

    def __getattr__(self, name):
        if name == "backbone_config":  # not set yet (while copying): no recursion
            raise AttributeError(name)
        return getattr(self.backbone_config, name)

    @property
    def _attn_implementation(self) -> str:
        return STREAM_ATTENTION + (self.backbone_config._attn_implementation or "eager")

    @_attn_implementation.setter
    def _attn_implementation(self, value: str):
        self.backbone_config._attn_implementation = value.removeprefix(STREAM_ATTENTION)


def build_backbone(backbone_config) -> PreTrainedModel:
    """transformers' causal LM of `backbone_config`, refused in one line where ParScale cannot wrap it."""
    if getattr(backbone_config, "is_encoder_decoder", False):
        raise ValueError(
            f"{backbone_config.model_type} is an encoder-decoder model (no causal LM of one decoder stack); "
            "ParScale wraps decoder-only causal LMs."
        )
    try:
        causal_lm = AutoModelForCausalLM.from_config(backbone_config)
    except ValueError as error:
        raise ValueError(
            f"transformers has no causal LM class for {backbone_config.model_type}; "
            "ParScale wraps decoder-only causal LMs."
        ) from error
    check_wrappable(causal_lm)
    return causal_lm


def default_attention(backbone_config) -> str:
    """sdpa where the backbone's class supports it (Gemma 2's soft-capping does not), else eager."""
    causal_lm_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(backbone_config), None)
    return "sdpa" if causal_lm_class is None or causal_lm_class._supports_sdpa else "eager"


def check_wrappable(causal_lm: PreTrainedModel):
    """Raises ValueError, naming the missing feature, for a model whose streams this wrapper cannot add."""
    name = type(causal_lm).__name__
    layers = getattr(getattr(causal_lm, "model", None), "layers", None)
    if causal_lm.base_model_prefix != "model" or layers is None:
        raise ValueError(f"{name} keeps no decoder layers at model.layers; ParScale cannot place its prefixes.")
    if not getattr(causal_lm, "_supports_attention_backend", False):
        raise ValueError(f"{name} does not route attention through transformers' attention interface.")
    for index, layer in enumerate(layers):
        attention = getattr(layer, "self_attn", None)
        if attention is None or not hasattr(attention, "head_dim"):
            raise ValueError(f"{name} layer {index} has no self-attention with a head_dim (a linear/SSM layer?).")


class ParScalePreTrainedModel(PreTrainedModel):
    config: ParScaleConfig
    config_class = ParScaleConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False  # flex attention's block masks cannot be extended with the prefix columns
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    def initialize_weights(self):
        super().initialize_weights()
        # transformers hands the backbone's modules to the backbone's own rules (it is a PreTrainedModel of its
        # own), which know no prefixes. Loaded prefixes are flagged initialised and kept (init.normal_).
        for layer in self.model.layers:
            self._init_prefixes(layer.self_attn)

    def _init_weights(self, module):
        self._init_prefixes(module)
        self.model._init_weights(module)  # the backbone's own rules, the aggregator's Linear layers included

    def _init_prefixes(self, attention: nn.Module):
        if getattr(attention, "prefix_k", None) is not None:
            init.normal_(attention.prefix_k, mean=0.0, std=self.config.parscale_prefix_init_std)
            init.normal_(attention.prefix_v, mean=0.0, std=self.config.parscale_prefix_init_std)


class ParScaleForCausalLM(ParScaleParameters, ParScalePreTrainedModel, GenerationMixin):
    """P parallel streams of a transformers decoder-only causal LM (see the module docstring)."""

    ADD_STREAMS = "from_backbone"  # named in from_pretrained's refusal

    def __init__(self, config: ParScaleConfig):
        if config._attn_implementation is None:  # the default the backbone's own class would take
            config._attn_implementation = default_attention(config.backbone_config)
        super().__init__(config)
        backbone = build_backbone(config.backbone_config)
        self.model, self.lm_head = backbone.model, backbone.get_output_embeddings()
        self._no_split_modules = backbone._no_split_modules
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
        self.model.aggregate_layer = None
        self._rebuild_parscale_modules(config.parscale_n, config.parscale_n_tokens)
        self.post_init()

    def _backbone_config(self):
        return self.config.backbone_config

    def _rebuild_parscale_modules(self, parscale_n: int, parscale_n_tokens: int) -> list[nn.Module]:
        backbone = self.config.backbone_config
        kv_heads = getattr(backbone, "num_key_value_heads", None) or backbone.num_attention_heads
        attentions = [layer.self_attn for layer in self.model.layers]
        for attention in attentions:
            attach_prefixes(attention, parscale_n, parscale_n_tokens, kv_heads, attention.head_dim)
            attention.config = backbone if parscale_n == 1 else StreamAttentionConfig(backbone)
        self.model.aggregate_layer = None
        if parscale_n > 1:
            like = self.model.get_input_embeddings().weight
            self.model.aggregate_layer = new_aggregator(backbone.hidden_size, parscale_n, like)
        return attentions + list(self.model.aggregate_layer or [])

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],  # as the backbones declare them: output_attentions, ...
    ) -> CausalLMOutputWithPast:
        inputs = {"attention_mask": attention_mask, "position_ids": position_ids, "use_cache": use_cache}
        if self.config.parscale_n == 1:
            outputs = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, cache=cache, **inputs, **kwargs)
        else:
            outputs = self._stream_forward(input_ids, inputs_embeds, cache, **inputs, **kwargs)
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])
        softcap = getattr(self.config.backbone_config, "final_logit_softcapping", None)
        if softcap is not None:  # Gemma 2/3: as their own heads do
            logits = torch.tanh(logits / softcap) * softcap
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config.backbone_config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=outputs.cache,
            hidden_states=outputs.hidden_states, attentions=outputs.attentions,
        )  # fmt: skip

    def final_hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The final hidden states the head reads (aggregated over the streams), without a cache: for a training
        loss that applies the head itself (sweeps/run/loss.py)."""
        if self.config.parscale_n == 1:
            return self.model(input_ids=input_ids, use_cache=False).last_hidden_state
        outputs = self._stream_forward(input_ids, None, None, attention_mask=None, position_ids=None, use_cache=False)
        return outputs.last_hidden_state

    def _stream_forward(self, input_ids, inputs_embeds, cache, attention_mask, position_ids, use_cache, **kwargs):
        """The backbone's model over B*P rows; returns its outputs with the caller's B rows (aggregated)."""
        n_streams = self.config.parscale_n
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.model.get_input_embeddings()(input_ids)
        batch_size = inputs_embeds.shape[0]
        if use_cache is not False and cache is None and self.config.backbone_config.use_cache:
            cache = DynamicCache(config=self.config.backbone_config)
        if isinstance(attention_mask, dict):  # prepared by generate() for a static cache, for the B input rows
            attention_mask = {key: repeat_for_streams(m, n_streams, batch_size) for key, m in attention_mask.items()}
        else:
            attention_mask = repeat_for_streams(attention_mask, n_streams, batch_size)
        outputs = self.model(
            inputs_embeds=inputs_embeds.repeat_interleave(n_streams, dim=0),
            attention_mask=attention_mask,
            position_ids=repeat_for_streams(position_ids, n_streams, batch_size),
            cache=None if cache is None else StreamFoldedCache(cache, n_streams),
            use_cache=use_cache,
            **kwargs,
        )
        return report_per_row(outputs, cache, self.model.aggregate_layer, n_streams, self.config.parscale_attn_smooth,
                              self.config.parscale_n_tokens)  # fmt: skip

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        """transformers' from_pretrained; a checkpoint of a backbone itself (a decoder's own config, no ParScale
        fields) loads as that backbone at P = 1 (`from_backbone` adds streams). Without this, transformers would
        read the backbone's config.json as a ParScaleConfig around the default backbone, billions of parameters."""
        if config is None and pretrained_model_name_or_path is not None:
            hub_options = {name: kwargs[name] for name in HUB_OPTIONS if name in kwargs}
            found = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_options)
            if not hasattr(found, "parscale_n"):
                config = ParScaleConfig(backbone_config=found.to_dict())
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, config=config, **kwargs)

    @classmethod
    def from_backbone(cls, source, parscale_n: int, **parscale_fields) -> "ParScaleForCausalLM":
        """The two-stage start: a ParScale model with `parscale_n` streams around `source` (a transformers causal
        LM instance, a P = 1 ParScaleForCausalLM, or a checkpoint directory / hub id of either), its backbone
        weights copied, the prefixes N(0, parscale_prefix_init_std^2) and the aggregator near uniform weights.
        `parscale_fields` set parscale_n_tokens, parscale_attn_smooth or parscale_prefix_init_std."""
        from_path = isinstance(source, (str, os.PathLike))
        backbone_config = AutoConfig.from_pretrained(source) if from_path else source.config
        if isinstance(backbone_config, ParScaleConfig):
            if backbone_config.parscale_n != 1:
                raise ValueError(
                    f"from_backbone copies a single-stream backbone, but the source has parscale_n="
                    f"{backbone_config.parscale_n}; switch it to P = 1 first with load_parscale_params."
                )
            backbone_config = backbone_config.backbone_config
        config = ParScaleConfig(backbone_config=backbone_config.to_dict(), parscale_n=parscale_n, **parscale_fields)
        if from_path:
            model, info = cls.load_without_parscale_check(source, config=config)
            missing, unexpected = info["missing_keys"], info["unexpected_keys"]
        else:
            model = cls(config).to(device=source.device, dtype=source.dtype)
            missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
        tied_head = ["lm_head.weight"] if config.tie_word_embeddings else []
        missing = [name for name in missing if not is_parscale_parameter(name) and name not in tied_head]
        if missing or unexpected:
            raise ValueError(
                f"{source} does not match a {backbone_config.model_type} backbone: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}; pass the backbone causal LM or its checkpoint."
            )
        return model


__all__ = ["ParScaleForCausalLM", "ParScalePreTrainedModel", "check_wrappable", "register_stream_attention"]
