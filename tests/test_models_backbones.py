"""ParScaleForCausalLM on every listed decoder family (Qwen2, Qwen2.5, Qwen3, Llama 3, Mistral, Gemma, Gemma 2):
P = 1 is the backbone; at P = 2 training has finite gradients, the cache (with the caller's batch) changes
nothing, left padding and the static cache work, and the model saves and reloads through the Auto classes."""

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MambaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
    T5Config,
)

from models import ParScaleConfig, ParScaleForCausalLM, Qwen2ParScaleForCausalLM, parscale_config
from models.stream_ablation import stream_ablation
from models.stream_diversity import recording_stream_diversity

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 64, "vocab_size": 99, "max_position_embeddings": 64, "pad_token_id": 0}  # fmt: skip
FAMILIES = {
    "qwen2": lambda: Qwen2Config(**SMALL),
    # Qwen2.5 is Qwen2's architecture; its small checkpoints tie the head to the embeddings.
    "qwen2.5": lambda: Qwen2Config(**SMALL, tie_word_embeddings=True, rope_parameters={"rope_type": "default",
                                                                                         "rope_theta": 1e6}),
    "qwen3": lambda: Qwen3Config(**SMALL, head_dim=16),  # head_dim apart from hidden_size / heads; q/k norms
    "llama3": lambda: LlamaConfig(**SMALL, rope_parameters={
        "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
    "mistral": lambda: MistralConfig(**SMALL, sliding_window=4),  # a window shorter than the prompts
    "gemma": lambda: GemmaConfig(**SMALL, head_dim=8),
    "gemma2": lambda: Gemma2Config(**SMALL, head_dim=8, sliding_window=4),  # soft-capping, alternating windows
}
GENERATE = {"max_new_tokens": 6, "pad_token_id": 0, "eos_token_id": None}


def backbone(family: str):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(FAMILIES[family]()).eval()  # sdpa, or eager for Gemma 2


def streams(family: str, parscale_n: int = 2):
    """A ParScale model around a fresh backbone of the family, with prefixes and an aggregator that matter
    (larger than their initial values, so a mistake in how they are shown would change the outputs)."""
    model = ParScaleForCausalLM.from_backbone(backbone(family), parscale_n=parscale_n, parscale_n_tokens=3).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "prefix_" in name or "aggregate_layer" in name:
                param.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_one_stream_is_the_backbone(family):
    plain = backbone(family)
    model = ParScaleForCausalLM.from_backbone(plain, parscale_n=1).eval()
    input_ids = torch.randint(1, 99, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, plain(input_ids).logits, atol=1e-5, rtol=0)
    assert torch.equal(model.generate(input_ids, **GENERATE), plain.generate(input_ids, **GENERATE))


@pytest.mark.parametrize("family", FAMILIES)
def test_two_streams_train_with_finite_gradients(family):
    model = streams(family).train()
    input_ids = torch.randint(1, 99, (2, 9))
    model(input_ids, labels=input_ids).loss.backward()
    gradients = {name: param.grad for name, param in model.named_parameters()}
    assert all(grad is not None and torch.isfinite(grad).all() for grad in gradients.values())
    assert gradients["model.layers.0.self_attn.prefix_k"].abs().sum() > 0
    assert gradients["model.aggregate_layer.0.weight"].abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_with_the_cache_equals_generation_without_it(family):
    model = streams(family)
    input_ids = torch.randint(1, 99, (2, 9))
    greedy = model.generate(input_ids, **GENERATE, return_dict_in_generate=True)
    assert torch.equal(greedy.sequences, model.generate(input_ids, **GENERATE, use_cache=False))
    keys = greedy.cache.layers[0].keys  # the caller's batch, the streams folded into the head axis
    assert keys.shape[:2] == (2, 2 * model.config.backbone_config.num_key_value_heads)
    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(1)
        sampled.append(model.generate(input_ids, **GENERATE, do_sample=True, top_k=0, use_cache=use_cache))
    assert torch.equal(*sampled)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_rows_generate_as_if_alone(family):
    model = streams(family)
    long, short = torch.randint(1, 99, (1, 9)), torch.randint(1, 99, (1, 5))
    padded = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1), long])
    mask = (torch.arange(9) >= torch.tensor([[4], [0]])).long()
    together = model.generate(padded, attention_mask=mask, **GENERATE)
    assert torch.equal(together[0, 4:], model.generate(short, **GENERATE)[0])
    assert torch.equal(together[1], model.generate(long, **GENERATE)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_static_cache_generates_as_the_dynamic_one(family):
    model = streams(family)
    input_ids = torch.randint(1, 99, (2, 9))
    static = model.generate(input_ids, **GENERATE, cache_implementation="static", return_dict_in_generate=True)
    assert torch.equal(static.sequences, model.generate(input_ids, **GENERATE))
    assert static.cache.layers[0].keys.shape[0] == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_reloads_through_the_auto_classes(family, tmp_path):
    model = streams(family)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is ParScaleForCausalLM and reloaded.config.backbone_config.model_type == \
        model.config.backbone_config.model_type  # fmt: skip
    input_ids = torch.randint(1, 99, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, model(input_ids).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["qwen3", "llama3", "mistral"])
def test_forward_compiles_as_one_graph(family):
    torch._dynamo.reset()
    model = streams(family)
    input_ids = torch.randint(1, 99, (2, 9))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 9])  # left padding: the masked path
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for inputs in ({}, {"attention_mask": mask}):
            torch.testing.assert_close(compiled(input_ids, **inputs).logits, model(input_ids, **inputs).logits,
                                       atol=1e-5, rtol=0)  # fmt: skip
    torch._dynamo.reset()


def test_from_backbone_reads_a_checkpoint_and_starts_near_uniform_stream_weights(tmp_path):
    backbone("qwen3").save_pretrained(tmp_path)
    model = ParScaleForCausalLM.from_backbone(tmp_path, parscale_n=4).eval()
    assert model.config.parscale_n == 4 and model.config.backbone_config.model_type == "qwen3"
    assert all(torch.isfinite(param).all() for param in model.parameters())
    prefixes = torch.cat([layer.self_attn.prefix_k.flatten() for layer in model.model.layers])
    assert 0.015 < prefixes.std() < 0.025  # N(0, parscale_prefix_init_std^2), not left as empty memory
    input_ids = torch.randint(1, 99, (2, 9))
    hidden = model.model(input_ids.repeat_interleave(4, dim=0)).last_hidden_state
    weights = torch.softmax(model.model.aggregate_layer(hidden.unflatten(0, (2, 4)).permute(0, 2, 3, 1).flatten(2)), -1)
    assert (weights - 0.25).abs().max() < 0.01  # the aggregator's small initial weights: every stream ~1/P
    with torch.no_grad():
        assert torch.isfinite(model(input_ids).logits).all()


def test_freeze_backbone_and_the_per_p_weights_file(tmp_path):
    model = streams("qwen3")
    model.freeze_backbone()
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trained == set(model.parscale_state_dict())
    input_ids = torch.randint(1, 99, (2, 9))
    with torch.no_grad():
        two_streams = model(input_ids).logits
    model.save_parscale_params(tmp_path / "p2.safetensors")
    model.set_parscale_n(1)  # back to the backbone alone
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, backbone("qwen3")(input_ids).logits, atol=1e-5, rtol=0)
    model.load_parscale_params(tmp_path / "p2.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, two_streams, atol=1e-6, rtol=0)


def test_the_released_qwen2_layout_is_the_general_model_on_a_qwen2_backbone():
    torch.manual_seed(0)
    released = Qwen2ParScaleForCausalLM(parscale_config("tiny-32", parscale_n=3)).eval()
    backbone_fields = released.config.to_qwen2_config().to_dict()
    n_prefix = released.config.parscale_n_tokens
    config = ParScaleConfig(backbone_config=backbone_fields, parscale_n=3, parscale_n_tokens=n_prefix)
    general = ParScaleForCausalLM(config).eval()
    general.load_state_dict(released.state_dict())
    input_ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(general(input_ids).logits, released(input_ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (T5Config(num_layers=1, d_model=16, d_kv=4, d_ff=16, num_heads=2, vocab_size=50), "encoder-decoder"),
        (GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50), "model.layers"),
        (MambaConfig(num_hidden_layers=1, hidden_size=16, vocab_size=50), "model.layers"),
    ],
    ids=["encoder-decoder", "gpt2", "mamba"],
)
def test_a_model_it_cannot_wrap_is_refused_naming_what_is_missing(config, words):
    with pytest.raises(ValueError, match=words) as error:
        ParScaleForCausalLM(ParScaleConfig(backbone_config=config, parscale_n=2))
    assert "\n" not in str(error.value)


def test_from_pretrained_refuses_a_backbone_checkpoint_without_the_streams_weights(tmp_path):
    plain = backbone("qwen3")
    plain.save_pretrained(tmp_path)
    config = ParScaleConfig(backbone_config=plain.config.to_dict(), parscale_n=2)
    with pytest.raises(ValueError, match="lacks .* ParScale weights.*ParScaleForCausalLM.from_backbone"):
        ParScaleForCausalLM.from_pretrained(tmp_path, config=config)


def test_the_stream_ablation_and_diversity_read_the_general_model():
    model = streams("qwen3")
    input_ids = torch.randint(1, 99, (4, 9))
    ablation = stream_ablation(model, input_ids)
    assert len(ablation.single_stream_losses) == 2 and ablation.stream_gain != 0.0 and ablation.aggregator_gain != 0.0
    with recording_stream_diversity(model) as record, torch.no_grad():
        model(input_ids)
    assert 0.0 < record.stream_distance < 2.0
