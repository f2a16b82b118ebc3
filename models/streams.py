"""The stream arithmetic shared by both ParScale models: the B input rows become B * P rows, batch-major
(row = b * P + stream), and the P streams' outputs become B rows again.

Batch-major rows make the KV cache's fold of the streams into the head axis, (B * P, kv, S, d) <->
(B, P * kv, S, d), a reshape (models/stream_cache.py), so the cache keeps the caller's batch."""

import torch
from torch import nn


def repeat_for_streams(tensor: torch.Tensor | None, n_streams: int, batch_size: int) -> torch.Tensor | None:
    """A per-row input of the caller's B rows (embeddings, mask, position ids) for the B * P rows; one that
    broadcasts over the batch (first dimension 1 while B > 1) stays as it is."""
    if tensor is None or (tensor.shape[0] == 1 and batch_size > 1):
        return tensor
    return tensor.repeat_interleave(n_streams, dim=0)


def prepend_per_stream(prefix: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """(P, heads, n, d) prefix and (B * P, heads, t, d) states -> (B * P, heads, n + t, d)."""
    per_row = prefix.to(states.dtype).unsqueeze(0).expand(states.shape[0] // prefix.shape[0], -1, -1, -1, -1)
    return torch.cat([per_row.flatten(0, 1), states], dim=2)


def stream_weights(hidden_states: torch.Tensor, aggregator: nn.Module, n_streams: int, smoothing: float):
    """The aggregator's per-token weights of the streams, (B, T, P) in float32, from the (B * P, T, h) final
    hidden states: a softmax smoothed towards uniform, w -> w (1 - eps) + eps / P."""
    streams = hidden_states.unflatten(0, (-1, n_streams)).permute(0, 2, 3, 1)  # (B, T, h, P)
    # The aggregator reads the P states concatenated hidden-major, stream-minor (feature h * P + i), as in the
    # released checkpoints; its softmax is taken in float32.
    weights = torch.softmax(aggregator(streams.flatten(2)).float(), dim=-1)
    return weights * (1 - smoothing) + smoothing / n_streams


def mix_streams(hidden_states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B * P, T, h) states of the streams -> (B, T, h), each token's streams summed with (B, T, P) `weights`."""
    streams = hidden_states.unflatten(0, (-1, weights.shape[-1])).transpose(1, 2)  # (B, T, P, h)
    return (streams * weights.unsqueeze(-1)).sum(dim=2).to(hidden_states.dtype)


def per_row_attentions(attention: torch.Tensor | None, n_streams: int, n_prefix: int) -> torch.Tensor | None:
    """(B * P, heads, T, n + S) attention probabilities of the streams -> (B, heads, T, S): the streams' mean
    over the real tokens (the prefix columns dropped, so a row sums to its real tokens' share)."""
    if attention is None:  # implementations that do not return probabilities (sdpa, flash)
        return None
    return attention[..., n_prefix:].unflatten(0, (-1, n_streams)).mean(dim=1)


def report_per_row(outputs, cache, aggregator: nn.Module, n_streams: int, smoothing: float, n_prefix: int):
    """A backbone's outputs over the B * P rows, in place, as the caller's B rows: the final states aggregated, the
    per-layer hidden states mixed with the same weights, attentions averaged over the streams, and the caller's
    `cache` in place of the folded view the layers used."""
    weights = stream_weights(outputs.last_hidden_state, aggregator, n_streams, smoothing)
    outputs.last_hidden_state = mix_streams(outputs.last_hidden_state, weights)
    outputs.cache = cache if outputs.cache is not None else None
    if outputs.hidden_states is not None:  # entries are None where output_hidden_states selects layers
        outputs.hidden_states = tuple(
            None if states is None else mix_streams(states, weights) for states in outputs.hidden_states
        )
    if outputs.attentions is not None:
        outputs.attentions = tuple(per_row_attentions(each, n_streams, n_prefix) for each in outputs.attentions)
    return outputs


__all__ = [
    "mix_streams", "per_row_attentions", "prepend_per_stream", "repeat_for_streams", "report_per_row", "stream_weights",
]  # fmt: skip
