"""Whether a trained ParScale model's streams matter, from its loss with parts of it switched off:
- every stream reading stream i's prefix, for each i: all P compute the same thing, so the aggregator's sum is
  stream i alone. `stream_gain`, the best single stream's loss minus the model's, is above 0 when the model
  gets something from combining different streams, and exactly 0 when the streams cannot differ (prefixes
  zeroed, frozen or tied) or only one of them reaches the output;
- the aggregator giving every stream the weight 1 / P: `aggregator_gain`, that loss minus the model's, is
  exactly 0 when the aggregator's weights do not reach the output.

It does not say that P streams beat a P = 1 model: at small scale much of that difference comes from the prefix
slots alone, which every stream has (docs/findings.md, the tiny grid from scratch).
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StreamAblation:
    loss: float  # mean loss per predicted token with the model's P streams
    single_stream_losses: tuple[float, ...]  # the same with every stream reading stream i's prefix
    uniform_weights_loss: float  # the same with the aggregator's weights all 1 / P

    @property
    def stream_gain(self) -> float:
        return min(self.single_stream_losses) - self.loss

    @property
    def aggregator_gain(self) -> float:
        return self.uniform_weights_loss - self.loss


@contextmanager
def every_stream_reads(model, stream: int):
    """Within the block, every stream's prefix (keys and values, every layer) is a copy of `stream`'s."""
    saved = []
    for module in model.modules():
        if getattr(module, "prefix_k", None) is not None:  # an attention module of either ParScale model
            for prefix in (module.prefix_k, module.prefix_v):
                saved.append((prefix, prefix.detach().clone()))
                prefix.data.copy_(prefix.data[stream : stream + 1].expand_as(prefix))
    try:
        yield
    finally:
        for prefix, original in saved:
            prefix.data.copy_(original)


@contextmanager
def uniform_stream_weights(model):
    """Within the block, the aggregator's logits are 0: every stream gets the weight 1 / P."""
    last = model.model.aggregate_layer[-1]
    saved = [(param, param.detach().clone()) for param in last.parameters()]
    for param, _ in saved:
        param.data.zero_()
    try:
        yield
    finally:
        for param, original in saved:
            param.data.copy_(original)


@torch.no_grad()
def stream_ablation(model, input_ids: torch.Tensor, micro_batch_size: int = 16) -> StreamAblation:
    """The model's loss on `input_ids` (rows of real tokens, predicting each next token) with all streams
    and with each stream alone; see the module docstring."""
    n_streams = model.config.parscale_n
    if n_streams < 2:
        raise ValueError("stream_ablation needs a model with parscale_n >= 2; P = 1 has one stream.")
    was_training = model.training
    model.eval()

    def loss() -> float:
        total = sum(model(rows, labels=rows).loss.item() * rows.shape[0] for rows in input_ids.split(micro_batch_size))
        return total / input_ids.shape[0]

    try:
        together = loss()
        alone = []
        for stream in range(n_streams):
            with every_stream_reads(model, stream):
                alone.append(loss())
        with uniform_stream_weights(model):
            uniform = loss()
    finally:
        model.train(was_training)
    return StreamAblation(loss=together, single_stream_losses=tuple(alone), uniform_weights_loss=uniform)
