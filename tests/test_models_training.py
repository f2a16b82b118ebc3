"""Training: the loss, gradient flow (also under bf16 autocast and activation checkpointing),
initialisation (also after building on the meta device), and the two-stage workflow: adding streams to a
Qwen2 backbone, freezing it, and switching between P-specific ParScale parameter files."""

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2ForCausalLM

from models import Qwen2ParScaleForCausalLM, is_parscale_parameter, parscale_config


def tiny_config(parscale_n, **overrides):
    return parscale_config("tiny-96", parscale_n, parscale_n_tokens=5, **overrides)


def tiny_qwen2():
    return Qwen2ForCausalLM(tiny_config(1).to_qwen2_config())


def test_loss_is_shifted_cross_entropy():
    torch.manual_seed(0)
    model = Qwen2ParScaleForCausalLM(tiny_config(2))
    input_ids = torch.randint(0, 256, (2, 16))
    output = model(input_ids, labels=input_ids)
    expected = F.cross_entropy(output.logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())
    torch.testing.assert_close(output.loss, expected)


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    model = Qwen2ParScaleForCausalLM(tiny_config(3)).train()
    input_ids = torch.randint(0, 256, (2, 16))
    model(input_ids, labels=input_ids).loss.backward()
    without_gradient = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without_gradient == []
    assert any(is_parscale_parameter(name) for name, _ in model.named_parameters())


def test_bf16_autocast_trains():
    torch.manual_seed(2)
    model = Qwen2ParScaleForCausalLM(tiny_config(2)).train()
    input_ids = torch.randint(0, 256, (2, 16))
    full_precision_loss = model(input_ids, labels=input_ids).loss.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    assert loss.item() == pytest.approx(full_precision_loss, rel=2e-2)
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.parameters())


def test_activation_checkpointing_recomputes_and_gives_the_same_gradients():
    torch.manual_seed(3)
    model = Qwen2ParScaleForCausalLM(tiny_config(2)).train()
    input_ids = torch.randint(0, 256, (2, 16))
    attention_calls = []
    model.model.layers[0].self_attn.register_forward_hook(lambda *_: attention_calls.append(1))

    def gradients():
        model.zero_grad()
        attention_calls.clear()
        model(input_ids, labels=input_ids).loss.backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}, len(attention_calls)

    plain, plain_calls = gradients()
    model.activation_checkpointing_enable()
    checkpointed, checkpointed_calls = gradients()
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the layer ran again in the backward pass
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, msg=name)


def assert_initialised(model, prefix_std, linear_std):
    prefixes = torch.cat([p.flatten() for n, p in model.named_parameters() if n.endswith(("prefix_k", "prefix_v"))])
    assert torch.isfinite(prefixes).all() and prefixes.std().item() == pytest.approx(prefix_std, rel=0.1)
    aggregator = model.model.aggregate_layer
    assert aggregator[0].weight.std().item() == pytest.approx(linear_std, rel=0.1)
    assert aggregator[0].bias.abs().sum() == 0 and aggregator[2].bias.abs().sum() == 0


def test_new_parameters_follow_the_configured_init():
    torch.manual_seed(4)
    model = Qwen2ParScaleForCausalLM(tiny_config(4, parscale_prefix_init_std=0.05, initializer_range=0.03))
    assert_initialised(model, prefix_std=0.05, linear_std=0.03)


@pytest.mark.parametrize("initialise", ["init_weights", "initialize_weights"])
def test_built_on_meta_device_then_materialised_is_initialised(initialise):
    torch.manual_seed(5)
    with torch.device("meta"):
        model = Qwen2ParScaleForCausalLM(tiny_config(4, parscale_prefix_init_std=0.05))
    model.to_empty(device="cpu")
    getattr(model, initialise)()
    assert_initialised(model, prefix_std=0.05, linear_std=0.02)
    input_ids = torch.randint(0, 256, (1, 8))
    assert torch.isfinite(model(input_ids).logits).all()


def backbone_state(model):
    return {name: tensor for name, tensor in model.state_dict().items() if not is_parscale_parameter(name)}


@pytest.mark.parametrize("via_directory", [False, True], ids=["in_memory", "directory"])
def test_from_qwen2_copies_the_backbone_and_adds_streams(tmp_path, via_directory):
    torch.manual_seed(6)
    qwen2 = tiny_qwen2()
    if via_directory:
        qwen2.save_pretrained(tmp_path)
    model = Qwen2ParScaleForCausalLM.from_qwen2(tmp_path if via_directory else qwen2, parscale_n=2)
    assert model.config.parscale_n == 2 and model.config.parscale_n_tokens == 48
    copied = backbone_state(model)
    assert copied.keys() == qwen2.state_dict().keys()
    assert all(torch.equal(copied[name], tensor) for name, tensor in qwen2.state_dict().items())
    assert_initialised(model, prefix_std=0.02, linear_std=0.02)


def test_from_qwen2_refuses_a_model_that_already_has_streams():
    with pytest.raises(ValueError, match="parscale_n=2"):
        Qwen2ParScaleForCausalLM.from_qwen2(Qwen2ParScaleForCausalLM(tiny_config(2)), parscale_n=4)


def test_frozen_backbone_gets_no_gradient_and_training_lowers_the_loss():
    torch.manual_seed(7)
    model = Qwen2ParScaleForCausalLM.from_qwen2(tiny_qwen2(), parscale_n=2, parscale_n_tokens=4).train()
    model.freeze_backbone()
    before = {name: tensor.clone() for name, tensor in backbone_state(model).items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    input_ids = torch.randint(0, 256, (4, 24))
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(input_ids, labels=input_ids).loss
        loss.backward()
        for name, param in model.named_parameters():
            assert (param.grad is None) != is_parscale_parameter(name), name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    assert all(torch.equal(before[name], tensor) for name, tensor in backbone_state(model).items())


def test_freeze_backbone_needs_streams():
    with pytest.raises(ValueError, match="parscale_n=1"):
        Qwen2ParScaleForCausalLM(tiny_config(1)).freeze_backbone()


def test_switch_between_parameter_sets_of_one_backbone(tmp_path):
    torch.manual_seed(8)
    base = Qwen2ParScaleForCausalLM(tiny_config(1)).eval()
    model = Qwen2ParScaleForCausalLM.from_qwen2(base, parscale_n=2).eval()
    input_ids = torch.randint(0, 256, (2, 10))
    logits = {}
    with torch.no_grad():
        logits[1] = base(input_ids).logits
        for parscale_n in (2, 4):
            model.set_parscale_n(parscale_n)
            logits[parscale_n] = model(input_ids).logits
            model.save_parscale_params(tmp_path / f"P{parscale_n}.safetensors")
        model.set_parscale_n(1)
        model.save_parscale_params(tmp_path / "P1.safetensors")

        for parscale_n in (2, 1, 4):
            model.load_parscale_params(tmp_path / f"P{parscale_n}.safetensors")
            assert model.config.parscale_n == parscale_n
            assert torch.equal(model(input_ids).logits, logits[parscale_n])
    assert not torch.allclose(logits[2], logits[4])
    backbone_bytes = sum(t.numel() * t.element_size() for t in backbone_state(model).values())
    assert (tmp_path / "P4.safetensors").stat().st_size < backbone_bytes / 4


def test_parameter_file_of_another_backbone_is_refused(tmp_path):
    Qwen2ParScaleForCausalLM(parscale_config("tiny-128", 2)).save_parscale_params(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="hidden_size=128"):
        Qwen2ParScaleForCausalLM(tiny_config(2)).load_parscale_params(tmp_path / "other.safetensors")
