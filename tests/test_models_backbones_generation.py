"""ParScaleForCausalLM on backbones other than the released Qwen2 layout: what transformers' common model and
generation tests (tests/transformers_common, docs/transformers-common-tests.md) found, kept as focused tests."""

import inspect

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from models import ParScaleConfig, ParScaleForCausalLM

PREFIX_STD = 0.02


def tiny_qwen3():
    return Qwen3Config(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, intermediate_size=37)  # fmt: skip


def assert_prefixes_drawn_from_the_configured_normal(model):
    for layer in model.model.layers:
        for prefix in (layer.self_attn.prefix_k, layer.self_attn.prefix_v):
            assert torch.isfinite(prefix).all()
            assert prefix.std().item() == pytest.approx(PREFIX_STD, rel=0.25)


def test_prefixes_are_initialised_though_the_backbone_initialises_its_own_modules(tmp_path):
    # transformers initialises the backbone (a sub-model) with the backbone's own rules, which do not know the
    # prefixes: they were left as uninitialised memory (values up to 1e33), and every output was NaN.
    torch.manual_seed(0)
    config = ParScaleConfig(backbone_config=tiny_qwen3(), parscale_n=2, parscale_n_tokens=16,
                            parscale_prefix_init_std=PREFIX_STD)  # fmt: skip
    assert_prefixes_drawn_from_the_configured_normal(ParScaleForCausalLM(config))

    backbone = Qwen3ForCausalLM(tiny_qwen3())
    backbone.save_pretrained(tmp_path / "backbone")
    model = ParScaleForCausalLM.from_backbone(tmp_path / "backbone", parscale_n=2, parscale_n_tokens=16)
    assert_prefixes_drawn_from_the_configured_normal(model)
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight, backbone.model.layers[1].mlp.up_proj.weight)

    model.save_pretrained(tmp_path / "parscale")
    reloaded = ParScaleForCausalLM.from_pretrained(tmp_path / "parscale")
    assert torch.equal(reloaded.model.layers[1].self_attn.prefix_v, model.model.layers[1].self_attn.prefix_v)


def test_one_row_with_a_padding_mask_is_computed_as_in_a_batch():
    # A 2D mask of one row was taken for one that broadcasts over the batch and not repeated for the P streams:
    # transformers' mask functions index it by row and failed (IndexError) on the second stream's row, e.g. in
    # assisted and prompt-lookup decoding, which run one row.
    torch.manual_seed(0)
    config = ParScaleConfig(backbone_config=tiny_qwen3(), parscale_n=2, parscale_n_tokens=3)
    model = ParScaleForCausalLM(config).eval()
    input_ids = torch.randint(3, 99, (2, 6))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    with torch.no_grad():
        in_batch = model(input_ids, attention_mask=attention_mask).logits[0]
        alone = model(input_ids[:1], attention_mask=attention_mask[:1]).logits[0]
        generated = model.generate(input_ids[:1], attention_mask=attention_mask[:1], max_new_tokens=3, do_sample=False)
    torch.testing.assert_close(alone[2:], in_batch[2:], rtol=1e-5, atol=1e-5)
    assert generated.shape == (1, 9)


def test_a_backbone_checkpoint_loads_as_the_backbone_at_one_stream(tmp_path):
    # Its config.json was read as a ParScaleConfig around the default backbone (a Qwen2 of billions of
    # parameters: transformers' test_correct_missing_keys ran the machine out of memory).
    torch.manual_seed(0)
    backbone = Qwen3ForCausalLM(tiny_qwen3()).eval()
    backbone.save_pretrained(tmp_path)
    model, info = ParScaleForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert (model.config.parscale_n, model.config.backbone_config.hidden_size) == (1, 32)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    input_ids = torch.randint(3, 99, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids).logits, backbone(input_ids).logits)


def test_forward_declares_the_keyword_arguments_of_transformers_models():
    # transformers' common tests read from this annotation whether a model can return attentions; without it
    # they skipped ParScaleForCausalLM's eager-versus-sdpa comparison with attentions.
    keywords = inspect.signature(ParScaleForCausalLM.forward).parameters["kwargs"].annotation.__args__[0]
    assert {"output_attentions", "output_hidden_states"} <= set(keywords.__annotations__)
