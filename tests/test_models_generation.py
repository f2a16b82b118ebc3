"""generate() with the KV cache: it must agree token for token with decoding without a cache (which
recomputes every stream and its prefix from scratch), also for left-padded batches, sampling and beam
search, where the cache's P * B rows are reordered; and a static cache, with and without the decode step
compiled, must decode the dynamic cache's tokens."""

import pytest
import torch
from transformers import CompileConfig, StaticCache

from models import Qwen2ParScaleForCausalLM, parscale_config


@pytest.fixture(scope="module", params=[1, 3], ids=lambda p: f"P{p}")
def model_tiny(request):
    torch.manual_seed(0)
    # Large init so that greedy decoding does not settle on one repeated token.
    config = parscale_config("tiny-96", request.param, parscale_n_tokens=5, initializer_range=0.15)
    return Qwen2ParScaleForCausalLM(config).eval()


def left_padded_batch(model, prompts):
    width = max(len(prompt) for prompt in prompts)
    pad = model.config.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return input_ids, attention_mask


def generate(model, input_ids, **kwargs):
    settings = {"max_new_tokens": 12, "pad_token_id": model.config.pad_token_id, "eos_token_id": None}
    with torch.no_grad():
        return model.generate(input_ids, **settings, **kwargs)[:, input_ids.shape[1] :]


def test_cached_greedy_equals_uncached(model_tiny):
    input_ids = torch.randint(0, 256, (2, 7))
    cached = generate(model_tiny, input_ids, do_sample=False)
    assert torch.equal(cached, generate(model_tiny, input_ids, do_sample=False, use_cache=False))
    assert len(set(cached[0].tolist())) > 2  # a decoding that actually varies


def test_left_padded_rows_decode_as_if_alone(model_tiny):
    prompts = [[5, 17, 200], [9, 33, 41, 120, 7, 64, 2]]
    input_ids, attention_mask = left_padded_batch(model_tiny, prompts)
    cached = generate(model_tiny, input_ids, attention_mask=attention_mask, do_sample=False)
    uncached = generate(model_tiny, input_ids, attention_mask=attention_mask, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    for row, prompt in enumerate(prompts):
        assert torch.equal(cached[row], generate(model_tiny, torch.tensor([prompt]), do_sample=False)[0])


def test_cached_sampling_equals_uncached(model_tiny):
    input_ids, attention_mask = left_padded_batch(model_tiny, [[1, 2, 3, 4], [100, 101]])
    samples = []
    for use_cache in (True, False):
        torch.manual_seed(7)
        samples.append(
            generate(model_tiny, input_ids, attention_mask=attention_mask, do_sample=True, use_cache=use_cache)
        )
    assert torch.equal(samples[0], samples[1])


def test_beam_search_with_reordered_cache_equals_uncached(model_tiny):
    input_ids, attention_mask = left_padded_batch(model_tiny, [[3, 1, 4, 1, 5], [9, 2, 6]])
    settings = {"attention_mask": attention_mask, "num_beams": 3, "do_sample": False, "num_return_sequences": 2}
    cached = generate(model_tiny, input_ids, **settings)
    assert cached.shape == (4, 12)
    assert torch.equal(cached, generate(model_tiny, input_ids, **settings, use_cache=False))


def compile_config():
    """The decode step compiled as one graph, also on a CPU; aot_eager traces as inductor does, without its
    slow C++ code generation (benchmarks/decoding.py times inductor itself)."""
    config = CompileConfig(fullgraph=True, dynamic=False, backend="aot_eager")
    config._compile_all_devices = True
    return config


@pytest.mark.parametrize("compiled", [False, True], ids=["static", "static_compiled"])
def test_static_cache_decodes_the_dynamic_caches_tokens(model_tiny, compiled):
    if compiled and model_tiny.config.parscale_n == 1:
        pytest.skip("P = 1 is Qwen2, whose compiled decoding transformers tests itself")
    torch._dynamo.reset()
    input_ids, attention_mask = left_padded_batch(model_tiny, [[5, 17, 200], [9, 33, 41, 120, 7, 64, 2]])
    static = {"cache_implementation": "static", **({"compile_config": compile_config()} if compiled else {})}
    for do_sample in (False, True):
        tokens = []
        for settings in ({}, static):
            torch.manual_seed(11)
            tokens.append(generate(model_tiny, input_ids, attention_mask=attention_mask,
                                   do_sample=do_sample, **settings))
        assert torch.equal(tokens[0], tokens[1]), f"do_sample={do_sample}"
    assert hasattr(model_tiny, "_compiled_call") == compiled


def test_static_cache_holds_the_real_tokens_of_every_stream_with_the_callers_batch(model_tiny):
    input_ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        output = model_tiny.generate(
            input_ids, max_new_tokens=5, cache_implementation="static", return_dict_in_generate=True,
            pad_token_id=model_tiny.config.pad_token_id, eos_token_id=None,
        )  # fmt: skip
    config, cache = model_tiny.config, output.cache
    assert isinstance(cache, StaticCache)
    # The caller's batch of 2; the streams folded into the head axis (models/stream_cache.py).
    assert cache.layers[0].keys.shape[:2] == (2, config.parscale_n * config.num_key_value_heads)
    assert cache.get_seq_length() == 7 + 5 - 1  # the prompt and the tokens fed back, no prefix positions
