"""The training loss: next-token cross-entropy from the model's final hidden states, a chunk of tokens at a
time, so that the full (batch x sequence x vocabulary) logits never exist.

At the paper's vocabulary (151,936) one micro-batch of 8 x 2048 tokens has 2.5 billion logits: 5 GB in bf16
and 10 GB more for their float32 copy and gradient. Here each chunk of `chunk_tokens` tokens computes its
logits, its float32 loss and, in the backward pass, recomputes them (activation checkpointing) to get its
gradient, so the loss holds about chunk_tokens x vocabulary x 10 bytes at a time, whatever the micro-batch.
The value equals transformers' `ForCausalLM` loss (mean over the predicted tokens) to rounding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 4096


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of `targets` (n,) under logits hidden (n, h) @ weight.T (vocab, h), `chunk_tokens`
    rows at a time."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss_sum, hidden[piece], weight, targets[piece], use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(hidden[piece], weight, targets[piece])
    return total / targets.numel()


class CausalLMLoss(nn.Module):
    """What the training loop runs: `loss = module(input_ids)`, the causal LM's next-token loss over the rows.

    It holds the language model's own `model` (the backbone with its streams and aggregation) and `lm_head`
    under the same names as `Qwen2ParScaleForCausalLM`, so its state dict is the model's and FSDP can shard it
    as the root module (the LM head's weight is tied to the token embedding and lives there)."""

    def __init__(self, lm: nn.Module, chunk_tokens: int = DEFAULT_CHUNK_TOKENS):
        super().__init__()
        self.model, self.lm_head = lm.model, lm.lm_head
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, use_cache=False).last_hidden_state
        hidden = hidden[:, :-1].flatten(0, 1)
        targets = input_ids[:, 1:].flatten()
        return chunked_cross_entropy(hidden, self.lm_head.weight, targets, self.chunk_tokens)
