"""How a run lays the model out (sweeps/run/parallelize.py) and computes its loss (sweeps/run/loss.py): the chunked
loss is transformers' loss, the meta-device model materialises with the model's own initialisation, the
same for any seed-equal run, bf16 is FSDP2's mixed precision, and compiled blocks train like eager ones."""

import pytest
import torch

from models import Qwen2ParScaleForCausalLM, parscale_config
from sweeps.run import distributed
from sweeps.run.build import build_trained, model_config
from sweeps.run.loop import train
from sweeps.run.loss import CausalLMLoss

import train_helpers  # noqa: F401  (one torch thread)
from train_helpers import tiny_config

CPU = distributed.Environment(0, 1, 0, torch.device("cpu"))


def test_chunked_loss_and_its_gradient_equal_transformers_loss():
    torch.manual_seed(0)
    lm = Qwen2ParScaleForCausalLM(parscale_config("tiny-64", parscale_n=2))
    ids = torch.randint(0, 259, (3, 20))
    expected = lm(input_ids=ids, labels=ids, use_cache=False).loss
    expected.backward()
    expected_grads = {name: p.grad.clone() for name, p in lm.named_parameters()}
    lm.zero_grad()
    loss = CausalLMLoss(lm, chunk_tokens=7)(ids)  # 57 predicted tokens: 9 chunks, the last one short
    loss.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    for name, p in lm.named_parameters():
        torch.testing.assert_close(p.grad, expected_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def build(tmp_path, *overrides):
    config = tiny_config(tmp_path / "run", 2, *overrides)
    return build_trained(config, model_config(config, 259), CPU, "ddp", False)


def test_meta_model_materialises_with_the_models_own_initialisation(tmp_path):
    trained, lm = build(tmp_path, "parscale_n=4", "model.parscale_prefix_init_std=0.5")
    assert not any(p.is_meta for p in trained.parameters()) and not any(b.is_meta for b in trained.buffers())
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    layer = lm.model.layers[0]
    assert layer.self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(layer.self_attn.q_proj.bias, torch.zeros_like(layer.self_attn.q_proj.bias))
    assert torch.equal(layer.input_layernorm.weight, torch.ones_like(layer.input_layernorm.weight))
    assert layer.self_attn.prefix_k.std().item() == pytest.approx(0.5, rel=0.1)
    assert not torch.equal(layer.self_attn.prefix_k[0], layer.self_attn.prefix_k[1])  # streams differ
    # Buffers too: with the same weights, a model built the ordinary way gives the same logits.
    reference = Qwen2ParScaleForCausalLM(lm.config)
    reference.load_state_dict(lm.state_dict())
    ids = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(lm(ids).logits, reference(ids).logits)

    again, _ = build(tmp_path, "parscale_n=4", "model.parscale_prefix_init_std=0.5")
    other_seed, _ = build(tmp_path, "parscale_n=4", "model.parscale_prefix_init_std=0.5", "seed=1")
    first, second, third = (module.state_dict() for module in (trained, again, other_seed))
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], third["model.embed_tokens.weight"])


def test_bf16_is_fsdp2_mixed_precision_on_a_single_process(tmp_path):
    config = tiny_config(tmp_path / "run", 2, "parscale_n=2", "precision=bf16")
    env = distributed.init(single_process_group=True)
    try:
        trained, lm = build_trained(config, model_config(config, 259), env, "fsdp", False)
        from torch.distributed.tensor import DTensor

        master = lm.model.layers[0].mlp.up_proj.weight
        assert isinstance(master, DTensor) and master.dtype == torch.float32
        seen = {}
        lm.model.layers[0].register_forward_hook(lambda module, args, output: seen.update(dtype=output.dtype))
        loss = trained(torch.randint(0, 256, (2, 16)))
        loss.backward()
        assert seen["dtype"] == torch.bfloat16 and loss.dtype == torch.float32
        assert master.grad.dtype == torch.float32
    finally:
        distributed.shutdown()


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path):
    eager = train(tiny_config(tmp_path / "eager", 3, "parscale_n=2", "compile=false"))
    compiled = train(tiny_config(tmp_path / "compiled", 3, "parscale_n=2", "compile=true"))
    assert compiled["final_train_loss"] == pytest.approx(eager["final_train_loss"], abs=1e-4)
    assert compiled["eval_loss"] == pytest.approx(eager["eval_loss"], abs=1e-4)
