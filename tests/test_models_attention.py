"""Attention at P > 1: without padding SDPA gets no per-row mask and the unrepeated key/value heads (on a GPU
no mask at all, so that it may take the flash kernel); every attention implementation gives the same logits, with
and without padding, also through generate(); the implementation is chosen on the config; sliding windows keep the
prefix visible."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from models import Qwen2ParScaleForCausalLM, attention, parscale_config

from test_models_reference import reference_logits


def tiny_config(parscale_n, **overrides):
    return parscale_config("tiny-96", parscale_n, parscale_n_tokens=5, initializer_range=0.1, **overrides)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records the arguments of every torch scaled_dot_product_attention call, then runs it."""
    calls, original = [], F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, **kwargs):
        calls.append({"query": query.shape, "key": key.shape, "attn_mask": attn_mask, **kwargs})
        return original(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return calls


def left_padded(model, lengths):
    width = max(lengths)
    input_ids = torch.randint(0, 256, (len(lengths), width))
    attention_mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    return input_ids.masked_fill(attention_mask == 0, model.config.pad_token_id), attention_mask


@pytest.mark.parametrize("mask", ["none", "all_ones"])
def test_sdpa_without_padding_gets_no_per_row_mask_and_unrepeated_kv_heads(sdpa_calls, mask):
    torch.manual_seed(0)
    model = Qwen2ParScaleForCausalLM(tiny_config(3)).train()
    input_ids = torch.randint(0, 256, (2, 16))
    attention_mask = torch.ones_like(input_ids) if mask == "all_ones" else None
    model(input_ids, attention_mask=attention_mask, labels=input_ids).loss.backward()
    config = model.config
    n_keys = config.parscale_n_tokens + 16
    assert len(sdpa_calls) == config.num_hidden_layers
    for call in sdpa_calls:
        # On a CPU one (L, S) lower-right mask for all rows and heads (on a GPU none: see the next test).
        assert call["attn_mask"].shape == (16, n_keys) and call["enable_gqa"]
        assert call["key"][1] == config.num_key_value_heads < config.num_attention_heads == call["query"][1]
        assert call["key"][0] == 3 * 2 and call["key"][2] == n_keys


def test_gpu_path_uses_is_causal_without_a_mask_and_computes_the_cpu_paths_attention(sdpa_calls):
    torch.manual_seed(4)
    n_prefix, length = 5, 9
    query = torch.randn(6, 4, length, 8)
    key, value = torch.randn(2, 6, 2, n_prefix + length, 8).unbind(0)
    by_mask = attention._lower_right_by_mask(query, key, value, 0.0, 0.3, gqa=True)
    by_dummies = attention._lower_right_by_dummy_queries(query, key, value, 0.0, 0.3, gqa=True)
    assert sdpa_calls[1]["attn_mask"] is None and sdpa_calls[1]["is_causal"] and sdpa_calls[1]["enable_gqa"]
    torch.testing.assert_close(by_dummies, by_mask)
    # Query i sees the prefix and real keys 0..i: the last key changes only the last query's output.
    key[:, :, -1] += 1.0
    changed = (attention._lower_right_by_mask(query, key, value, 0.0, 0.3, gqa=True) != by_mask).any(dim=(0, 1, 3))
    assert changed.tolist() == [False] * (length - 1) + [True]


def test_padding_gives_sdpa_a_mask_with_the_prefix_columns(sdpa_calls):
    torch.manual_seed(1)
    model = Qwen2ParScaleForCausalLM(tiny_config(2)).eval()
    input_ids, attention_mask = left_padded(model, [5, 9])
    with torch.no_grad():
        model(input_ids, attention_mask=attention_mask)
    masks = [call["attn_mask"] for call in sdpa_calls]
    assert all(mask is not None and mask.shape[-1] == model.config.parscale_n_tokens + 9 for mask in masks)
    assert masks[0][:, :, :, :5].all()  # the prefix, visible from every row, padded or not


@pytest.mark.parametrize("parscale_n", [1, 3])
def test_implementations_give_the_same_logits_and_tokens(parscale_n):
    torch.manual_seed(2)
    models = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(2)
        models[implementation] = Qwen2ParScaleForCausalLM(tiny_config(parscale_n, attn_implementation=implementation))
        assert models[implementation].config._attn_implementation == implementation
    input_ids, attention_mask = left_padded(models["sdpa"], [4, 11, 8])
    with torch.no_grad():
        for inputs in ({"input_ids": input_ids}, {"input_ids": input_ids, "attention_mask": attention_mask}):
            logits = {name: model.eval()(**inputs).logits for name, model in models.items()}
            real = inputs.get("attention_mask", torch.ones_like(input_ids)).bool()  # padding's logits are moot
            torch.testing.assert_close(logits["sdpa"][real], logits["eager"][real], rtol=1e-5, atol=1e-5)
        tokens = {
            name: model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8, do_sample=False,
                                 pad_token_id=model.config.pad_token_id, eos_token_id=None)  # fmt: skip
            for name, model in models.items()
        }
    assert torch.equal(tokens["sdpa"], tokens["eager"])


def test_implementation_set_on_the_config_is_honoured():
    config = tiny_config(2)
    config._attn_implementation = "eager"
    model = Qwen2ParScaleForCausalLM(config).eval()
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        attentions = model(torch.randint(0, 256, (1, 6)), output_attentions=True).attentions
    assert attentions[0] is not None  # eager returns the probabilities, sdpa does not


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed here")
def test_unavailable_flash_attention_is_refused_when_the_model_is_built():
    with pytest.raises((ImportError, ValueError), match="(?i)flash"):
        Qwen2ParScaleForCausalLM(tiny_config(2, attn_implementation="flash_attention_2"))


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_sliding_window_keeps_the_prefix_visible(attn_implementation):
    torch.manual_seed(3)
    config = tiny_config(
        3, use_sliding_window=True, sliding_window=4, max_window_layers=0, attn_implementation=attn_implementation
    )
    assert set(config.layer_types) == {"sliding_attention"}
    model = Qwen2ParScaleForCausalLM(config).eval()
    input_ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        logits = model(input_ids).logits
        generated = model.generate(input_ids, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        uncached = model.generate(
            input_ids, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None, use_cache=False
        )
    expected = reference_logits(model.state_dict(), config, input_ids, sliding_window=4)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(generated, uncached)


def test_flash_attention_with_a_sliding_window_is_refused_at_p_above_1():
    model = Qwen2ParScaleForCausalLM(tiny_config(2, use_sliding_window=True, sliding_window=4, max_window_layers=0))
    model.config._attn_implementation = "flash_attention_2"  # as if flash-attn were installed
    with pytest.raises(ValueError, match="sliding window"):
        model(torch.randint(0, 256, (1, 8)))
