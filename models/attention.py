"""Attention of a ParScale layer: Qwen2's attention whose keys and values start with a learned prefix per
stream, and the masks that show that prefix.

Stream i's prefix is n extra key/value positions in front of the real tokens' keys and values, with no
rotary embedding (it is prepended after the rotation) and always visible. The KV cache holds the real tokens
only; the prefix is prepended again at every step.

Masks. Every mask that reaches this attention at P > 1 describes the real tokens only, as transformers'
mask functions build it; `show_prefix` adds the n always-visible columns in front. `None` keeps the
meaning it has in transformers: no padding, and the real keys seen causally from the first one. With the
prefix in front this is a lower-right-aligned causal mask (query i sees the n prefix keys and real keys
0..i), which needs no per-row mask:
  - sdpa: on GPUs, SDPA's own `is_causal` is upper-left aligned, so n dummy queries go in front of the real
    ones and are dropped afterwards: the call has no mask tensor and takes the key/value heads as they are
    (`enable_gqa`), so SDPA may pick the flash kernel and keys/values are never repeated per query head.
    (torch's `causal_lower_right` bias expresses the same mask, but torch.compile cannot build that tensor
    subclass inside a compiled block, and passed between modules it would meet FSDP2's input casting.) On
    CPUs, where that gains little, one (L, S) lower-right mask shared by all rows and heads, GQA unrepeated.
  - flash attention: its causal mask is lower-right aligned already, so `None` goes through unchanged.
Padding, static caches and sliding windows give a dense mask (or flash attention's 2D padding mask), which
gains the prefix columns and goes to transformers' attention function of the configured implementation
(for one new token per row, to SDPA with the query heads grouped per key/value head instead).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2.modeling_qwen2 import Qwen2Attention, apply_rotary_pos_emb, eager_attention_forward
from transformers.utils.generic import is_flash_attention_requested

from .streams import prepend_per_stream


def show_prefix(mask, n_prefix: int):
    """Extends a mask over the real tokens with `n_prefix` columns in front that every query sees."""
    if mask is None:  # see the module docstring: the attention handles it without a mask tensor
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(
            "ParScale with parscale_n > 1 supports the 'sdpa', 'eager' and flash attention implementations, "
            f"whose masks are tensors, not {type(mask).__name__}; load the model with attn_implementation='sdpa'."
        )
    if mask.ndim == 2:  # flash attention's padding mask (rows, kv)
        return torch.cat([mask.new_ones(mask.shape[0], n_prefix), mask], dim=1)
    # A mask expanded over the batch (stride 0): extend its one row, then expand again.
    rows = mask[:1] if mask.stride(0) == 0 else mask
    visible = True if mask.dtype == torch.bool else 0.0  # bool for sdpa, additive float for eager
    prefix_columns = torch.full((*rows.shape[:-1], n_prefix), visible, dtype=mask.dtype, device=mask.device)
    return torch.cat([prefix_columns, rows], dim=-1).expand(mask.shape[0], -1, -1, -1)


def sdpa_causal_after_prefix(query, key, value, n_prefix: int, dropout: float, scale: float) -> torch.Tensor:
    """SDPA in which query i sees the `n_prefix` keys in front and the real keys 0..i (a lower-right causal
    mask), with keys and values as they are (GQA unrepeated). query (rows, heads, L, d), key/value
    (rows, kv_heads, n_prefix + S, d); returns (rows, L, heads, d)."""
    q_length = query.shape[2]
    gqa = query.shape[1] != key.shape[1]
    if q_length == 1:  # one new token (decoding with a dynamic cache) sees every key
        output = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=scale, enable_gqa=gqa)
        return output.transpose(1, 2)
    # Real keys past the L-th are the empty slots of a static cache at prefill, never visible here.
    key, value = key[:, :, : n_prefix + q_length], value[:, :, : n_prefix + q_length]
    if query.device.type == "cpu":
        output = _lower_right_by_mask(query, key, value, dropout, scale, gqa)
    else:
        output = _lower_right_by_dummy_queries(query, key, value, dropout, scale, gqa)
    return output.transpose(1, 2)


def _lower_right_by_dummy_queries(query, key, value, dropout, scale, gqa):
    """On GPUs: SDPA's `is_causal` (upper-left aligned) with n dummy queries in front, dropped afterwards, is
    the lower-right mask with no mask tensor, which lets SDPA take the flash kernel."""
    n_lead = key.shape[2] - query.shape[2]
    dummies = query.new_zeros(*query.shape[:2], n_lead, query.shape[3])
    output = F.scaled_dot_product_attention(
        torch.cat([dummies, query], dim=2), key, value, dropout_p=dropout, scale=scale, is_causal=True, enable_gqa=gqa
    )
    return output[:, :, n_lead:]


def _lower_right_by_mask(query, key, value, dropout, scale, gqa):
    """On CPUs: one (L, S) mask shared by every row and head, which torch's CPU kernels take with GQA as it is
    (measured 15-20% faster than the dummy queries, whose causal skipping gains little there)."""
    q_length, kv_length = query.shape[2], key.shape[2]
    mask = torch.ones(q_length, kv_length, dtype=torch.bool, device=query.device).tril(kv_length - q_length)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa
    )


def sdpa_one_query_under_mask(query, key, value, mask, dropout: float, scale: float) -> torch.Tensor:
    """SDPA for one new token per row (decoding) under a mask (a static cache's, or padding): the query heads
    sharing a key/value head take the place of SDPA's queries, so that keys and values are not repeated per
    query head, also inside torch.compile. query (rows, heads, 1, d); returns (rows, 1, heads, d)."""
    rows, heads, _, dim = query.shape
    grouped = query.reshape(rows, key.shape[1], heads // key.shape[1], dim)
    output = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, dropout_p=dropout, scale=scale)
    return output.reshape(rows, heads, 1, dim).transpose(1, 2)


class Qwen2ParScaleAttention(Qwen2Attention):
    """Qwen2 attention whose keys and values start with a learned prefix per stream (when P > 1)."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.set_prefix_shape(config.parscale_n, config.parscale_n_tokens)

    def set_prefix_shape(self, n_streams: int, n_tokens: int):
        """(Re)creates uninitialised prefixes for `n_streams` streams, or removes them when n_streams is 1."""
        attach_prefixes(self, n_streams, n_tokens, self.config.num_key_value_heads, self.head_dim)

    def forward(self, hidden_states, position_embeddings, attention_mask, cache=None, **kwargs):
        # Qwen2Attention.forward's steps, written out to put the prefix (if any) in front of the keys and values
        # after the rotary embedding and the cache update, and to choose the attention call (`_attend`). Also at
        # P = 1, where the steps are Qwen2's exactly: Qwen2Attention.forward is wrapped by the `kernels`
        # package's hub-kernel routing, whose ContextVar update torch.compile cannot trace inside activation
        # checkpointing, so a checkpointed decoder block would not compile as one graph.
        input_shape = hidden_states.shape[:-1]
        head_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(head_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(head_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(head_shape).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, *position_embeddings)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
        output, weights = self._attend(query, key, value, attention_mask, **kwargs)
        return self.o_proj(output.reshape(*input_shape, -1).contiguous()), weights

    def _attend(self, query, key, value, attention_mask, **kwargs):
        dropout = self.attention_dropout if self.training else 0.0
        implementation = self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        if self.prefix_k is None:  # Qwen2's call
            return attention(self, query, key, value, attention_mask, dropout=dropout, scaling=self.scaling,
                             sliding_window=self.sliding_window, **kwargs)  # fmt: skip
        key, value = prepend_per_stream(self.prefix_k, key), prepend_per_stream(self.prefix_v, value)
        return attend_after_prefix(
            self, query, key, value, attention_mask, implementation, attention, dropout, self.scaling, **kwargs
        )


def attend_after_prefix(module, query, key, value, mask, implementation, attention, dropout, scaling, **kwargs):
    """Attention over keys/values that start with the module's prefix, under `mask`, a mask over the real
    tokens (or None: causal, no padding); `attention` is transformers' function of `implementation`."""
    n_prefix = module.prefix_k.shape[2]
    if implementation == "sdpa":
        if mask is None:
            return sdpa_causal_after_prefix(query, key, value, n_prefix, dropout, scaling), None
        if query.shape[2] == 1 and mask.shape[1] == 1:  # one mask for all heads
            return sdpa_one_query_under_mask(query, key, value, show_prefix(mask, n_prefix), dropout, scaling), None
    if getattr(module, "sliding_window", None) is not None and is_flash_attention_requested(
        requested_attention_implementation=implementation
    ):
        raise ValueError(
            "Flash attention's sliding window would hide the stream prefixes from later tokens; with "
            "parscale_n > 1 and sliding-window layers use attn_implementation='sdpa' or 'eager'."
        )
    kwargs.pop("sliding_window", None)  # the mask carries the window; the prefix stays visible
    return attention(module, query, key, value, show_prefix(mask, n_prefix), dropout=dropout, scaling=scaling, **kwargs)


def attach_prefixes(attention: nn.Module, n_streams: int, n_tokens: int, kv_heads: int, head_dim: int):
    """Gives an attention module uninitialised prefixes `prefix_k`, `prefix_v` of shape (P, kv_heads, n, d),
    or none (None) when n_streams is 1."""
    if n_streams == 1:
        attention.prefix_k = attention.prefix_v = None
        return
    like = next(attention.parameters())
    shape = (n_streams, kv_heads, n_tokens, head_dim)
    attention.prefix_k = nn.Parameter(torch.empty(shape, device=like.device, dtype=like.dtype))
    attention.prefix_v = nn.Parameter(torch.empty(shape, device=like.device, dtype=like.dtype))


__all__ = ["Qwen2ParScaleAttention", "attach_prefixes", "attend_after_prefix", "show_prefix"]
