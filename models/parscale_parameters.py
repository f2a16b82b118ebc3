"""The ParScale parameters of a model (prefixes and aggregator) apart from its backbone: naming, freezing,
one small file per P, and switching P. Shared by `Qwen2ParScaleForCausalLM` and `ParScaleForCausalLM`, whose
parameter names are the same (the released checkpoints': `...self_attn.prefix_{k,v}`,
`model.aggregate_layer.{0,2}`)."""

import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

BACKBONE_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


def is_parscale_parameter(name: str) -> bool:
    """Whether a parameter name belongs to ParScale (a prefix or the aggregator) rather than the backbone."""
    return name.endswith((".prefix_k", ".prefix_v")) or ".aggregate_layer." in name


def new_aggregator(hidden_size: int, n_streams: int, like: torch.Tensor) -> nn.Sequential:
    """Linear(P*h -> h), SiLU, Linear(h -> P): per-token stream logits (uninitialised; see _init_weights)."""
    factory = {"device": like.device, "dtype": like.dtype}
    return nn.Sequential(
        nn.Linear(n_streams * hidden_size, hidden_size, **factory), nn.SiLU(),
        nn.Linear(hidden_size, n_streams, **factory),
    )  # fmt: skip


class ParScaleParameters:
    """Methods over the ParScale parameters of a model class that provides `_backbone_config()` (the config
    holding hidden_size, ...) and `_rebuild_parscale_modules(P, n)` (new prefixes and aggregator, returned
    for initialisation)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """PreTrainedModel.from_pretrained, refusing a checkpoint that holds the backbone but lacks the prefixes
        or the aggregator its config asks for (a backbone checkpoint, or released files partly downloaded), rather
        than silently putting random ParScale weights on a trained backbone. Where the backbone is missing
        too, nothing trained is loaded, and transformers' usual path applies: every missing weight is
        initialised and listed in the loading report."""
        wants_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
        )
        missing = set(loading_info["missing_keys"])
        missing_parscale = sorted(name for name in missing if is_parscale_parameter(name))
        loaded_backbone = any(name not in missing for name, _ in model.named_parameters()
                              if not is_parscale_parameter(name))  # fmt: skip
        if missing_parscale and loaded_backbone:
            raise ValueError(
                f"The checkpoint {pretrained_model_name_or_path} has parscale_n={model.config.parscale_n} in its "
                f"config but lacks {len(missing_parscale)} ParScale weights ({', '.join(missing_parscale[:3])}, ...). "
                f"To add streams to a backbone checkpoint, use {cls.__name__}.{cls.ADD_STREAMS}(path, parscale_n=P), "
                "which initialises them; for a released ParScale checkpoint, re-download its safetensors files."
            )
        return (model, loading_info) if wants_loading_info else model

    @classmethod
    def load_without_parscale_check(cls, path, **kwargs):
        """transformers' from_pretrained as it is, with its loading report: for adding streams to a backbone
        checkpoint, whose ParScale weights are missing on purpose and get initialised."""
        return super().from_pretrained(path, output_loading_info=True, **kwargs)

    def parscale_state_dict(self) -> dict[str, torch.Tensor]:
        """The ParScale parameters only (prefixes and aggregator), by their full names."""
        return {name: param for name, param in self.named_parameters() if is_parscale_parameter(name)}

    def freeze_backbone(self):
        """The paper's parameter-efficient mode: only the prefixes and the aggregator keep training."""
        if self.config.parscale_n == 1:
            raise ValueError(
                "freeze_backbone() would leave nothing to train: with parscale_n=1 the model has no ParScale "
                "parameters. Add streams first with ParScaleForCausalLM.from_backbone(model, parscale_n=P)."
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
        for key in BACKBONE_SHAPE_KEYS:
            if int(metadata[key]) != getattr(self._backbone_config(), key):
                raise ValueError(
                    f"{path} was saved for a backbone with {key}={metadata[key]}, this model has "
                    f"{getattr(self._backbone_config(), key)}; load it into the backbone it was trained with."
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
        new_modules = self._rebuild_parscale_modules(parscale_n, parscale_n_tokens)
        with torch.no_grad():
            for module in new_modules:
                self._init_weights(module)

    def _parscale_metadata(self) -> dict[str, str]:
        keys = ("parscale_n", "parscale_n_tokens", "parscale_attn_smooth")
        metadata = {key: str(getattr(self.config, key)) for key in keys}
        backbone = self._backbone_config()
        return metadata | {key: str(getattr(backbone, key)) for key in BACKBONE_SHAPE_KEYS}


__all__ = ["ParScaleParameters", "is_parscale_parameter", "new_aggregator"]
