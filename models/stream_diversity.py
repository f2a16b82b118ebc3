"""How far apart a ParScale model's P streams are, read off the aggregator's input and output during any
forward pass (a hook: no second pass, nothing in the model changes):

- `stream_distance`: 1 - the mean cosine similarity of two different streams' final hidden states (after the
  final norm, what the aggregator reads), over every pair of streams and every token. 0: the streams compute
  the same thing, so P streams are one stream P times; larger: they differ.
- `weight_entropy`: the entropy of the aggregator's per-token weights (smoothing included, as the model uses
  them) over ln P. 1: every stream weighs 1 / P; lower: the aggregator prefers some streams for some tokens.

Streams that never come apart (distance ~0, entropy ~1) cannot give a P = 8 model anything a P = 1 model
with the same prefix slots lacks; see also models/stream_ablation.py, which measures what the difference is
worth in loss.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class StreamDiversity:
    """Sums over the tokens seen so far (so processes can add theirs) and their means."""

    distance_sum: float = 0.0
    entropy_sum: float = 0.0
    tokens: int = 0

    @property
    def stream_distance(self) -> float:
        return self.distance_sum / self.tokens if self.tokens else math.nan

    @property
    def weight_entropy(self) -> float:
        return self.entropy_sum / self.tokens if self.tokens else math.nan

    def add(self, streams: torch.Tensor, logits: torch.Tensor, smoothing: float) -> None:
        """streams (B, T, h, P): the final hidden states; logits (B, T, P): the aggregator's output."""
        n_streams = streams.shape[-1]
        unit = torch.nn.functional.normalize(streams.float(), dim=2)
        cosines = torch.einsum("bthi,bthj->btij", unit, unit)
        mean_other = (cosines.sum(dim=(-2, -1)) - n_streams) / (n_streams * (n_streams - 1))
        weights = torch.softmax(logits.float(), dim=-1) * (1 - smoothing) + smoothing / n_streams
        entropy = -(weights * weights.clamp_min(1e-30).log()).sum(dim=-1) / math.log(n_streams)
        self.distance_sum += float((1 - mean_other).sum())
        self.entropy_sum += float(entropy.sum())
        self.tokens += mean_other.numel()


@contextmanager
def recording_stream_diversity(model):
    """Within the block, every forward pass of `model` (a ParScale model, its CausalLM, or anything holding
    one as `.model`) adds its tokens to the yielded StreamDiversity; yields None for a P = 1 model."""
    inner, smoothing = model, None
    while not hasattr(inner, "aggregate_layer") and hasattr(inner, "model"):
        smoothing = getattr(getattr(inner, "config", None), "parscale_attn_smooth", smoothing)
        inner = inner.model
    aggregator = getattr(inner, "aggregate_layer", None)
    if aggregator is None:
        yield None
        return
    record = StreamDiversity()
    # The backbone's own config (ParScaleForCausalLM) has no ParScale fields: the smoothing is the wrapper's.
    smoothing = getattr(inner.config, "parscale_attn_smooth", smoothing)
    hidden = aggregator[0].out_features

    def hook(module, inputs, logits):
        # The aggregator reads the P states concatenated hidden-major, stream-minor (feature h * P + i).
        with torch.no_grad():
            record.add(inputs[0].unflatten(-1, (hidden, -1)), logits, smoothing)

    handle = aggregator.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()
