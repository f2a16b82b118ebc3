"""What the model returns at P > 1 has the caller's batch: the aggregated final state (what the LM head and a
chunked loss read from `model.model`), per-layer hidden states mixed with the aggregator's own stream weights
(so hidden_states[-1] is last_hidden_state), attentions averaged over the streams on the real tokens; and
tools that read them, assisted decoding among them, work."""

import copy

import pytest
import torch

from models import Qwen2ParScaleForCausalLM, parscale_config
from models.streams import mix_streams


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = parscale_config("tiny-96", 3, parscale_n_tokens=5, initializer_range=0.15, attn_implementation="eager")
    return Qwen2ParScaleForCausalLM(config).eval()


def stream_states(model, input_ids, module_list):
    """The raw (P*B rows) outputs of each module in `module_list`, recorded by forward hooks."""
    recorded = []
    hooks = [m.register_forward_hook(lambda _m, _i, output: recorded.append(output)) for m in module_list]
    try:
        with torch.no_grad():
            output = model(input_ids, output_hidden_states=True, output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    return output, recorded


def test_base_model_returns_the_aggregated_state_with_the_callers_batch(model):
    input_ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        hidden = model.model(input_ids=input_ids).last_hidden_state
        logits = model(input_ids).logits
    assert hidden.shape == (2, 7, model.config.hidden_size)
    torch.testing.assert_close(model.lm_head(hidden), logits)


def test_hidden_states_are_the_streams_mixed_with_the_aggregation_weights(model):
    input_ids = torch.randint(0, 256, (2, 7))
    output, layer_outputs = stream_states(model, input_ids, model.model.layers)
    hidden_states = output.hidden_states
    assert len(hidden_states) == model.config.num_hidden_layers + 1
    assert all(states.shape == (2, 7, model.config.hidden_size) for states in hidden_states)
    # First the embeddings (every stream starts from them), last the aggregated final state.
    torch.testing.assert_close(hidden_states[0], model.model.embed_tokens(input_ids))
    with torch.no_grad():
        last = model.model(input_ids).last_hidden_state
    assert torch.equal(hidden_states[-1], last)
    with torch.no_grad():
        final_streams = model.model.norm(layer_outputs[-1])
        weights = model.model.stream_weights(final_streams)
        expected = mix_streams(layer_outputs[0], weights)
    torch.testing.assert_close(hidden_states[1], expected)


def test_attentions_are_the_stream_mean_over_the_real_tokens(model):
    input_ids = torch.randint(0, 256, (2, 7))
    output, attention_outputs = stream_states(model, input_ids, [layer.self_attn for layer in model.model.layers])
    n_prefix = model.config.parscale_n_tokens
    raw = attention_outputs[0][1]  # (P * B, heads, T, n + T) probabilities of the streams
    assert raw.shape == (3 * 2, model.config.num_attention_heads, 7, n_prefix + 7)
    expected = raw[..., n_prefix:].unflatten(0, (2, 3)).mean(dim=1)  # batch-major rows
    assert output.attentions[0].shape == (2, model.config.num_attention_heads, 7, 7)
    torch.testing.assert_close(output.attentions[0], expected)
    assert (output.attentions[0].sum(-1) < 1).all()  # the prefix took a share of every row


def test_assisted_decoding_with_outputs_matches_greedy(model):
    input_ids = torch.randint(0, 256, (1, 6))
    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0, "eos_token_id": None,
                "return_dict_in_generate": True, "output_hidden_states": True, "output_attentions": True}  # fmt: skip
    with torch.no_grad():
        greedy = model.generate(input_ids, **settings)
        assisted = model.generate(input_ids, assistant_model=copy.deepcopy(model), **settings)
    assert torch.equal(greedy.sequences, assisted.sequences)
    for step in assisted.hidden_states:
        assert all(states.shape[0] == 1 for states in step)
