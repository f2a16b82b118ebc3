"""torch.compile: the whole forward traces as one graph (fullgraph) at P = 1, 2, 4, 8, with and without
padding, and each decoder block compiles as one graph for training, with activation checkpointing on or off;
and the bare model's calling conventions (return_dict=False, the past_key_values name of the cache).

Compilation here uses the "eager" and "aot_eager" backends: they trace and (for training) split forward and
backward as inductor would, without its slow C++ code generation on a CPU."""

import pytest
import torch
from transformers import DynamicCache

from models import Qwen2ParScaleForCausalLM, parscale_config


def tiny_model(parscale_n, num_hidden_layers=2):
    torch.manual_seed(parscale_n)
    config = parscale_config("tiny-64", parscale_n, parscale_n_tokens=3, num_hidden_layers=num_hidden_layers)
    return Qwen2ParScaleForCausalLM(config)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(("parscale_n", "padded"), [(1, False), (2, False), (2, True), (4, True), (8, True)])
def test_forward_compiles_as_one_graph(parscale_n, padded):
    # One layer: tracing time grows with depth, and every layer runs the same code.
    model = tiny_model(parscale_n, num_hidden_layers=1).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    input_ids = torch.randint(0, 256, (2, 9))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 9]) if padded else None
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids, attention_mask=mask).logits,
                                   model(input_ids, attention_mask=mask).logits)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("parscale_n", [1, 8])
def test_decoder_blocks_compile_as_one_graph_for_training(parscale_n, checkpointing):
    model = tiny_model(parscale_n, num_hidden_layers=1).train()
    if checkpointing:
        model.activation_checkpointing_enable()
    input_ids = torch.randint(0, 256, (2, 16))

    def gradients():
        model.zero_grad()
        model(input_ids, labels=input_ids).loss.backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    expected = gradients()
    for layer in model.model.layers:
        layer.compile(fullgraph=True, backend="aot_eager")
    compiled = gradients()
    for name, gradient in expected.items():
        torch.testing.assert_close(compiled[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_bare_model_returns_a_tuple_when_asked():
    model = tiny_model(2).eval()
    input_ids = torch.randint(0, 256, (3, 5))
    with torch.no_grad():
        as_tuple = model.model(input_ids, return_dict=False)
        as_output = model.model(input_ids)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_output.last_hidden_state)
    assert as_tuple[0].shape == (3, 5, model.config.hidden_size)


@pytest.mark.parametrize("parscale_n", [1, 2])
def test_cache_passed_as_past_key_values_is_used(parscale_n):
    model = tiny_model(parscale_n).eval()
    input_ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad(), pytest.warns(FutureWarning, match="past_key_values"):
        cache = DynamicCache(config=model.config)
        model.model(input_ids[:, :6], past_key_values=cache, use_cache=True)
        continued = model.model(input_ids[:, 6:], past_key_values=cache, use_cache=True).last_hidden_state
    with torch.no_grad():
        at_once = model.model(input_ids).last_hidden_state[:, 6:]
    torch.testing.assert_close(continued, at_once, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == 10
