"""The KV cache of a wrapped backbone at P > 1, kept with the caller's batch.

Inside `ParScaleForCausalLM` the backbone runs B*P rows, batch-major (row = b * P + stream). The cache the
caller holds (the one `generate` builds, or one passed in) stores those rows folded into the head axis:
(B, P * kv_heads, S, d). Folding batch-major rows is a reshape, and unfolding the stored tensors back to
(B * P, kv_heads, S, d) is a free view, so every transformers utility that selects, reorders, repeats or
crops cache rows by batch (beam search, assisted decoding, static caches, contrastive search) works on B
rows unchanged, and a static cache allocates itself from the folded shape on its first update.

`StreamFoldedCache` is what the backbone's layers see: the caller's cache, with `update` folding the new
keys/values in and unfolding what the cache returns; everything else (lengths, mask sizes, layer types) is
the caller's cache itself.
"""

import torch
from transformers.cache_utils import Cache


def fold_streams(states: torch.Tensor, n_streams: int) -> torch.Tensor:
    """(B * P, heads, S, d), batch-major rows -> (B, P * heads, S, d)."""
    return states.reshape(states.shape[0] // n_streams, n_streams * states.shape[1], *states.shape[2:])


def unfold_streams(states: torch.Tensor, n_streams: int) -> torch.Tensor:
    """(B, P * heads, S, d) -> (B * P, heads, S, d), batch-major rows (a view of a contiguous cache)."""
    return states.reshape(states.shape[0] * n_streams, states.shape[1] // n_streams, *states.shape[2:])


class StreamFoldedCache(Cache):
    """A view of `cache` (caller's batch B, P * kv heads) for the backbone's B * P rows of kv heads."""

    def __init__(self, cache: Cache, n_streams: int):
        # Cache.__init__ is not called: every attribute but these two is the wrapped cache's (__getattr__), so
        # Cache's own methods (get_seq_length, get_mask_sizes, is_sliding, ...) read the wrapped cache's layers.
        self.folded = cache
        self.n_streams = n_streams

    def __getattr__(self, name):
        if name in ("folded", "n_streams"):  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.folded, name)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values = self.folded.update(
            fold_streams(key_states, self.n_streams), fold_streams(value_states, self.n_streams), layer_idx,
            *args, **kwargs,
        )  # fmt: skip
        return unfold_streams(keys, self.n_streams), unfold_streams(values, self.n_streams)


__all__ = ["StreamFoldedCache", "fold_streams", "unfold_streams"]
