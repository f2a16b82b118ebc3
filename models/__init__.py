"""The ParScale language model on transformers 5 (Chen et al. 2025, arXiv 2505.10475).

Importing this package registers model_type "qwen2_parscale" with AutoConfig, AutoModel and
AutoModelForCausalLM, so released ParScale checkpoints load without trust_remote_code."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_parscale import Qwen2ParScaleConfig
from .modeling_parscale import (
    Qwen2ParScaleForCausalLM,
    Qwen2ParScaleModel,
    Qwen2ParScalePreTrainedModel,
    is_parscale_parameter,
)
from .presets import ParameterCounts, config_from_mapping, count_parameters, parscale_config

# exist_ok: re-importing (e.g. importlib.reload) registers the same classes again.
AutoConfig.register(Qwen2ParScaleConfig.model_type, Qwen2ParScaleConfig, exist_ok=True)
AutoModel.register(Qwen2ParScaleConfig, Qwen2ParScaleModel, exist_ok=True)
AutoModelForCausalLM.register(Qwen2ParScaleConfig, Qwen2ParScaleForCausalLM, exist_ok=True)

__all__ = [
    "ParameterCounts",
    "Qwen2ParScaleConfig",
    "Qwen2ParScaleForCausalLM",
    "Qwen2ParScaleModel",
    "Qwen2ParScalePreTrainedModel",
    "config_from_mapping",
    "count_parameters",
    "is_parscale_parameter",
    "parscale_config",
]
