"""Configuration of the ParScale language model (Chen et al. 2025, "Parallel Scaling Law for Language
Models", arXiv 2505.10475): `Qwen2ParScaleConfig`, the released checkpoints' flat Qwen2 configuration plus the
number of parallel streams P and how their input prefixes and output aggregation are shaped and initialised;
and `ParScaleConfig`, the same ParScale fields around any decoder's own configuration (`backbone_config`).

The field names `parscale_n`, `parscale_n_tokens` and `parscale_attn_smooth` are those of the released
checkpoints' config.json, so that those files load unchanged."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config


@strict
class Qwen2ParScaleConfig(Qwen2Config):
    r"""
    parscale_n (`int`, defaults to 1):
        Number of parallel streams P. With 1 the model is exactly Qwen2 (no prefixes, no aggregation).
    parscale_n_tokens (`int`, defaults to 48):
        Prefix length: each stream owns this many learned key/value positions in every layer (the paper
        uses 48).
    parscale_attn_smooth (`float`, defaults to 0.1):
        Smoothing epsilon of the aggregation weights, w -> w * (1 - eps) + eps / P, which keeps every stream
        in use (the released checkpoints use 0.1).
    parscale_prefix_init_std (`float`, defaults to 0.02):
        New prefixes are drawn from N(0, std^2), independently per stream so the streams differ from the
        first step. (The released code left them as uninitialised memory.) The aggregator's two Linear
        layers are initialised like every Linear of Qwen2: weights N(0, initializer_range^2), zero biases;
        with such small weights the initial stream weights are close to uniform, 1/P each.
    """

    model_type = "qwen2_parscale"

    parscale_n: int = 1
    parscale_n_tokens: int = 48
    parscale_attn_smooth: float | int = 0.1
    parscale_prefix_init_std: float | int = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Checked here as well as by `validate()` (which @strict runs next) so that a bad value surfaces as a
        # plain ValueError rather than wrapped in huggingface_hub's validation error.
        self.validate_parscale()

    def to_qwen2_config(self) -> Qwen2Config:
        """The backbone as a plain Qwen2Config, e.g. for a Qwen2ForCausalLM of the same shape."""
        qwen2_fields = {k: v for k, v in self.to_dict().items() if not k.startswith("parscale_")}
        qwen2_fields.pop("model_type")
        return Qwen2Config(**qwen2_fields)

    def validate_parscale(self):
        """Raises ValueError, naming the field and the fix, for values the model cannot be built from."""
        _check_parscale_fields(self)
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must divide hidden_size ({self.hidden_size}); "
                f"choose a head count that is a divisor of hidden_size."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) must divide num_attention_heads "
                f"({self.num_attention_heads}) for grouped-query attention; choose a divisor."
            )


@strict
class ParScaleConfig(PreTrainedConfig):
    r"""
    P parallel streams on any transformers decoder-only causal LM (`models.ParScaleForCausalLM`).

    backbone_config (`dict` or `PreTrainedConfig`, defaults to a Qwen2 configuration):
        The wrapped model's own configuration (Qwen2, Qwen3, Llama, Mistral, ...); a dict needs its
        `model_type`.
    parscale_n, parscale_n_tokens, parscale_attn_smooth, parscale_prefix_init_std:
        As in `Qwen2ParScaleConfig`: the number of streams P (1 is the backbone itself), the prefix length,
        the aggregation weights' smoothing and the prefixes' initial standard deviation.
    """

    model_type = "parscale"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2")}

    backbone_config: dict | PreTrainedConfig | None = None
    parscale_n: int = 1
    parscale_n_tokens: int = 48
    parscale_attn_smooth: float | int = 0.1
    parscale_prefix_init_std: float | int = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The head is the backbone's: tied exactly when the backbone ties its own.
        self.tie_word_embeddings = bool(getattr(self.backbone_config, "tie_word_embeddings", False))
        self.validate_parscale()

    def get_text_config(self, decoder=None, encoder=None) -> PreTrainedConfig:
        """The backbone's configuration: generation, caches and masks read layer counts and windows there."""
        return self.backbone_config

    def validate_parscale(self):
        """Raises ValueError, naming the field and the fix, for values the model cannot be built from."""
        _check_parscale_fields(self)


def _check_parscale_fields(config):
    if config.parscale_n < 1:
        raise ValueError(
            f"parscale_n must be at least 1 (the number of parallel streams P; 1 is the backbone itself), "
            f"got {config.parscale_n}."
        )
    if config.parscale_n > 1 and config.parscale_n_tokens < 1:
        raise ValueError(
            f"parscale_n_tokens must be at least 1 when parscale_n > 1 (each stream needs a prefix), "
            f"got {config.parscale_n_tokens}."
        )
    if not 0.0 <= config.parscale_attn_smooth <= 1.0:
        raise ValueError(
            f"parscale_attn_smooth must lie in [0, 1] (0 = no smoothing, 1 = uniform weights), "
            f"got {config.parscale_attn_smooth}."
        )
    if config.parscale_prefix_init_std < 0:
        raise ValueError(f"parscale_prefix_init_std must be >= 0, got {config.parscale_prefix_init_std}.")


__all__ = ["ParScaleConfig", "Qwen2ParScaleConfig"]
