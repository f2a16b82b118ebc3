"""The ParScale language model on transformers 5 (Chen et al. 2025, arXiv 2505.10475).

Two models: `ParScaleForCausalLM` puts P streams on any transformers decoder-only causal LM (Qwen2, Qwen3,
Llama, Mistral, ...; `ParScaleConfig(backbone_config=...)`), and `Qwen2ParScaleForCausalLM` is the released
checkpoints' Qwen2 layout. Importing this package registers model_types "parscale" and "qwen2_parscale" with
the Auto classes (so both load without trust_remote_code) and the "parscale_<impl>" attention functions."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_parscale import ParScaleConfig, Qwen2ParScaleConfig
from .modeling_parscale import (
    Qwen2ParScaleForCausalLM,
    Qwen2ParScaleModel,
    Qwen2ParScalePreTrainedModel,
    is_parscale_parameter,
)
from .parscale_lm import ParScaleForCausalLM, check_wrappable, register_stream_attention
from .presets import ParameterCounts, config_from_mapping, count_parameters, parscale_config

# exist_ok: re-importing (e.g. importlib.reload) registers the same classes again.
AutoConfig.register(Qwen2ParScaleConfig.model_type, Qwen2ParScaleConfig, exist_ok=True)
AutoModel.register(Qwen2ParScaleConfig, Qwen2ParScaleModel, exist_ok=True)
AutoModelForCausalLM.register(Qwen2ParScaleConfig, Qwen2ParScaleForCausalLM, exist_ok=True)
AutoConfig.register(ParScaleConfig.model_type, ParScaleConfig, exist_ok=True)
AutoModelForCausalLM.register(ParScaleConfig, ParScaleForCausalLM, exist_ok=True)
register_stream_attention()

__all__ = [
    "ParScaleConfig",
    "ParScaleForCausalLM",
    "ParameterCounts",
    "check_wrappable",
    "Qwen2ParScaleConfig",
    "Qwen2ParScaleForCausalLM",
    "Qwen2ParScaleModel",
    "Qwen2ParScalePreTrainedModel",
    "config_from_mapping",
    "count_parameters",
    "is_parscale_parameter",
    "parscale_config",
]
