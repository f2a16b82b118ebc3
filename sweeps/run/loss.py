"""The training loss: next-token cross-entropy from the model's final hidden states, a chunk of tokens at a
time, so that the full (batch x sequence x vocabulary) logits never exist.

At the paper's vocabulary (151,936) one micro-batch of 8 x 2048 tokens has 2.5 billion logits: 5 GB in bf16
and 10 GB more for their float32 copy and gradient. `LinearCrossEntropy` instead takes one chunk of
`chunk_tokens` tokens at a time through the LM head, its float32 softmax and the loss, and computes that
chunk's gradients right away (the softmax minus the one-hot target is the logits' gradient): the hidden
states' gradient in a buffer of their size, the head weight's summed over the chunks in one float32 buffer.
The backward pass only scales them. So the loss holds the two gradient buffers plus one chunk's logits,
whatever the micro-batch, and never recomputes the logits. The value equals transformers' `ForCausalLM` loss
(mean over the predicted tokens) to rounding, and so do the gradients (tests/test_train_layout.py)."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_CHUNK_TOKENS = 4096


class LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(hidden_i @ weight.T, target_i), chunk by chunk, gradients computed in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens):
        hidden_needs, weight_needs = ctx.needs_input_grad[:2]
        n = targets.numel()
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if hidden_needs else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if weight_needs else None
        for start in range(0, n, chunk_tokens):
            piece = slice(start, start + chunk_tokens)
            chunk, target = hidden[piece], targets[piece]
            logits = (chunk @ weight.T).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, target[:, None]).squeeze(1)).sum()
            if not (hidden_needs or weight_needs):
                continue
            grad_logits = logits.sub_(log_norm[:, None]).exp_()  # the softmax, in place of the logits
            grad_logits[torch.arange(target.numel(), device=target.device), target] -= 1.0
            grad_logits = grad_logits.div_(n).to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[piece] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight.add_(grad_logits.T @ chunk)  # summed in float32, the product cast on the fly
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        # In place: the buffers are this backward's alone, and a float32 copy of the head's gradient would cost
        # 4 bytes per vocabulary x hidden entry more.
        hidden_grad = None if grad_hidden is None else grad_hidden.mul_(grad_output.to(grad_hidden.dtype))
        weight_grad = None if grad_weight is None else grad_weight.mul_(grad_output).to(ctx.weight_dtype)
        return hidden_grad, weight_grad, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Mean cross-entropy of `targets` (n,) under logits hidden (n, h) @ weight.T (vocab, h)."""
    return LinearCrossEntropy.apply(hidden, weight, targets, chunk_tokens)


class CausalLMLoss(nn.Module):
    """What the training loop runs: `loss = module(input_ids)`, the causal LM's next-token loss over the rows.

    It holds the language model's own `model` (the backbone with its streams and aggregation) and `lm_head`
    under the model's names, so its state dict is the model's and FSDP can shard it as the root module (the LM
    head's weight is tied to the token embedding and lives there). In `Qwen2ParScaleForCausalLM` the streams
    live inside `model`; a wrapped family's `model` is its plain backbone, and `ParScaleForCausalLM` runs the
    streams around it: the loss calls each through the model's `final_hidden_states`."""

    def __init__(self, lm: nn.Module, chunk_tokens: int = DEFAULT_CHUNK_TOKENS):
        super().__init__()
        self.model, self.lm_head = lm.model, lm.lm_head
        self.chunk_tokens = chunk_tokens
        # Both ParScale classes give the aggregated states the head reads (a plain transformers LM, as the GPU
        # check trains beside P = 1, its model's); a function, not a submodule, so the state dict keeps the
        # model's names.
        self._final_hidden = getattr(lm, "final_hidden_states", None) or (
            lambda input_ids: lm.model(input_ids=input_ids, use_cache=False).last_hidden_state
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self._final_hidden(input_ids)
        hidden = hidden[:, :-1].flatten(0, 1)
        targets = input_ids[:, 1:].flatten()
        return linear_cross_entropy(hidden, self.lm_head.weight, targets, self.chunk_tokens)
