"""The model against references: transformers' Qwen2 at P = 1, and at P > 1 a naive re-implementation of
the released ParScale algorithm written out below, also through a directory in the released checkpoint
layout loaded by AutoModelForCausalLM without trust_remote_code."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2Model

from models import Qwen2ParScaleForCausalLM, parscale_config
from models.modeling_parscale import Qwen2ParScaleDecoderLayer, Qwen2ParScaleModel


def tiny_config(parscale_n, **overrides):
    # Large init so that logits differ clearly between tokens, streams and positions.
    return parscale_config("tiny-96", parscale_n, parscale_n_tokens=5, initializer_range=0.1, **overrides)


def reference_logits(state, config, input_ids, sliding_window=None):
    """The released ParScale forward pass, written out naively in float64 from a state dict with the
    released parameter names: one explicit loop over layers, the prefix concatenated in front of each
    stream's keys and values, a causal mask that shows the whole prefix, then the aggregation (P > 1).
    With `sliding_window` w every layer's token i sees real tokens i - w + 1 .. i only, and the whole prefix."""
    state = {name: tensor.double() for name, tensor in state.items()}
    n_streams = config.parscale_n
    has_prefix = "model.layers.0.self_attn.prefix_k" in state  # also with one stream, for comparisons
    n_prefix = state["model.layers.0.self_attn.prefix_k"].shape[2] if has_prefix else 0
    n_heads, n_kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = config.hidden_size // n_heads
    batch, length = input_ids.shape

    def rms_norm(x, weight):
        return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps)

    def rotate_half(x):
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    theta = config.rope_parameters["rope_theta"]
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    real = torch.ones(length, length).tril()
    if sliding_window is not None:
        real = real.triu(-(sliding_window - 1))
    sees = torch.cat([torch.ones(length, n_prefix), real], dim=1).bool()

    embeddings = state["model.embed_tokens.weight"]
    x = torch.cat([embeddings[input_ids]] * n_streams, dim=0)  # row = stream * batch + b
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        a = rms_norm(x, state[p + "input_layernorm.weight"])

        def project(name, heads, a=a, p=p):
            out = a @ state[p + f"self_attn.{name}.weight"].T + state[p + f"self_attn.{name}.bias"]
            return out.view(n_streams * batch, length, heads, head_dim).transpose(1, 2)

        q, k, v = project("q_proj", n_heads), project("k_proj", n_kv_heads), project("v_proj", n_kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if has_prefix:
            k = torch.cat([state[p + "self_attn.prefix_k"].repeat_interleave(batch, dim=0), k], dim=2)
            v = torch.cat([state[p + "self_attn.prefix_v"].repeat_interleave(batch, dim=0), v], dim=2)
        k = k.repeat_interleave(n_heads // n_kv_heads, dim=1)
        v = v.repeat_interleave(n_heads // n_kv_heads, dim=1)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)).masked_fill(~sees, float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n_streams * batch, length, -1)
        x = x + attended @ state[p + "self_attn.o_proj.weight"].T

        m = rms_norm(x, state[p + "post_attention_layernorm.weight"])
        gate, up = m @ state[p + "mlp.gate_proj.weight"].T, m @ state[p + "mlp.up_proj.weight"].T
        x = x + (F.silu(gate) * up) @ state[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, state["model.norm.weight"])

    if n_streams > 1:
        streams = [x[s * batch : (s + 1) * batch] for s in range(n_streams)]
        features = torch.stack(streams, dim=-1).flatten(-2)  # feature index = h * P + stream
        hidden = F.silu(features @ state["model.aggregate_layer.0.weight"].T + state["model.aggregate_layer.0.bias"])
        weights = (hidden @ state["model.aggregate_layer.2.weight"].T
                   + state["model.aggregate_layer.2.bias"]).softmax(-1)
        smooth = config.parscale_attn_smooth
        weights = weights * (1 - smooth) + smooth / n_streams
        x = sum(weights[..., s : s + 1] * streams[s] for s in range(n_streams))
    return x @ embeddings.T  # tied LM head


def test_p1_logits_equal_transformers_qwen2():
    torch.manual_seed(0)
    model = Qwen2ParScaleForCausalLM(tiny_config(1)).eval()
    qwen2 = Qwen2ForCausalLM(model.config.to_qwen2_config()).eval()
    qwen2.load_state_dict(model.state_dict())
    input_ids = torch.randint(0, 256, (2, 17))
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, qwen2(input_ids).logits)
    assert not any(name.endswith(("prefix_k", "prefix_v")) or "aggregate" in name for name in model.state_dict())


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_streams_match_naive_reference(attn_implementation):
    torch.manual_seed(1)
    config = tiny_config(3)
    config._attn_implementation = attn_implementation
    model = Qwen2ParScaleForCausalLM(config).eval()
    input_ids = torch.randint(0, 256, (2, 13))
    with torch.no_grad():
        logits = model(input_ids).logits
    expected = reference_logits(model.state_dict(), config, input_ids)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)


def test_equal_prefixes_give_one_streams_output():
    torch.manual_seed(2)
    model = Qwen2ParScaleForCausalLM(tiny_config(4)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for prefix in (layer.self_attn.prefix_k, layer.self_attn.prefix_v):
                prefix.copy_(prefix[:1].expand_as(prefix))
    input_ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        logits = model(input_ids).logits

    # Stream 0 alone: its prefix, no aggregation.
    one_stream = {
        name: tensor[:1] if name.endswith(("prefix_k", "prefix_v")) else tensor
        for name, tensor in model.state_dict().items()
        if "aggregate_layer" not in name
    }
    expected = reference_logits(one_stream, tiny_config(1), input_ids)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)


def released_checkpoint(directory, parscale_n=2, drop=()):
    """Writes a directory as the released ParScale checkpoints are laid out (config.json with the remote
    code's auto_map, model.safetensors with the released parameter names) and returns its state dict."""
    torch.manual_seed(3)
    config = tiny_config(parscale_n)
    hidden, inter, n_tokens = config.hidden_size, config.intermediate_size, config.parscale_n_tokens
    n_heads, n_kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = hidden // n_heads
    kv_dim = n_kv_heads * head_dim
    state = {"model.embed_tokens.weight": torch.randn(config.vocab_size, hidden) * 0.1}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj.weight": (hidden, hidden), "self_attn.q_proj.bias": (hidden,),
            "self_attn.k_proj.weight": (kv_dim, hidden), "self_attn.k_proj.bias": (kv_dim,),
            "self_attn.v_proj.weight": (kv_dim, hidden), "self_attn.v_proj.bias": (kv_dim,),
            "self_attn.o_proj.weight": (hidden, hidden),
            "mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden),
            "mlp.down_proj.weight": (hidden, inter),
            "self_attn.prefix_k": (parscale_n, n_kv_heads, n_tokens, head_dim),
            "self_attn.prefix_v": (parscale_n, n_kv_heads, n_tokens, head_dim),
        }  # fmt: skip
        state.update({p + name: torch.randn(shape) * 0.1 for name, shape in shapes.items()})
        state[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(hidden)
        state[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(hidden)
    state["model.norm.weight"] = 1 + 0.1 * torch.randn(hidden)
    state["model.aggregate_layer.0.weight"] = torch.randn(hidden, parscale_n * hidden) * 0.1
    state["model.aggregate_layer.0.bias"] = torch.randn(hidden) * 0.1
    state["model.aggregate_layer.2.weight"] = torch.randn(parscale_n, hidden) * 0.1
    state["model.aggregate_layer.2.bias"] = torch.randn(parscale_n) * 0.1
    save_file({k: v for k, v in state.items() if not k.endswith(drop)}, directory / "model.safetensors")

    released_config = {
        "architectures": ["Qwen2ParScaleForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_qwen2_parscale.Qwen2ParScaleConfig",
            "AutoModelForCausalLM": "modeling_qwen2_parscale.Qwen2ParScaleForCausalLM",
        },
        "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02,
        "intermediate_size": inter, "max_position_embeddings": 256, "max_window_layers": 36,
        "model_type": "qwen2_parscale", "num_attention_heads": n_heads, "num_hidden_layers": config.num_hidden_layers,
        "num_key_value_heads": n_kv_heads, "parscale_attn_smooth": 0.1, "parscale_n": parscale_n,
        "parscale_n_tokens": n_tokens, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
        "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "float32",
        "transformers_version": "4.46.2", "use_cache": True, "use_sliding_window": False,
        "vocab_size": config.vocab_size,
    }  # fmt: skip
    (directory / "config.json").write_text(json.dumps(released_config))
    return state, config


def test_released_layout_loads_with_auto_classes_and_matches_reference(tmp_path):
    state, config = released_checkpoint(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # no trust_remote_code
    assert isinstance(model, Qwen2ParScaleForCausalLM)
    assert model.config.parscale_n == 2 and model.config.rope_parameters["rope_theta"] == 10000.0
    input_ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        logits = model(input_ids).logits
    torch.testing.assert_close(logits.double(), reference_logits(state, config, input_ids), rtol=1e-4, atol=1e-4)


def test_checkpoint_without_prefixes_is_refused_with_the_fix(tmp_path):
    released_checkpoint(tmp_path, drop=("prefix_k", "prefix_v"))
    with pytest.raises(ValueError, match=r"prefix_k.*from_qwen2"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_checkpoint_without_any_of_the_models_weights_is_initialised_as_transformers_does(tmp_path):
    # Nothing trained is loaded, so no random ParScale weights end up on a trained backbone: transformers'
    # usual path (initialise every missing weight, list it) applies, as its common tests expect.
    torch.manual_seed(6)
    Qwen2ParScaleForCausalLM(tiny_config(2)).save_pretrained(tmp_path)
    save_file({"unrelated": torch.zeros(2)}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    model, info = Qwen2ParScaleForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert {"model.layers.0.self_attn.prefix_k", "model.aggregate_layer.0.weight"} <= set(info["missing_keys"])
    assert model.model.layers[0].self_attn.prefix_k.std().item() == pytest.approx(0.02, rel=0.2)


def test_save_pretrained_round_trip(tmp_path):
    torch.manual_seed(4)
    model = Qwen2ParScaleForCausalLM(tiny_config(2)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "qwen2_parscale" and saved["parscale_n"] == 2
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    def fields(config):
        return {key: value for key, value in config.to_dict().items() if key != "_name_or_path"}

    assert fields(loaded.config) == fields(model.config)
    input_ids = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)


def test_left_padding_leaves_real_tokens_logits_unchanged():
    torch.manual_seed(5)
    model = Qwen2ParScaleForCausalLM(tiny_config(2)).eval()
    short, long = torch.randint(0, 256, (1, 6)), torch.randint(0, 256, (1, 10))
    padded = torch.cat([torch.full((1, 4), model.config.pad_token_id), short], dim=1)
    batch = torch.cat([padded, long])
    attention_mask = torch.tensor([[0] * 4 + [1] * 6, [1] * 10])
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = model(batch, attention_mask=attention_mask, position_ids=position_ids).logits
        alone = model(short).logits
    torch.testing.assert_close(batched[0, 4:], alone[0], rtol=1e-4, atol=1e-4)


def test_modules_mirror_transformers_qwen2():
    # The ParScale classes assemble Qwen2's modules themselves but run Qwen2's forward passes, which read
    # these attributes; a transformers release that adds one must be mirrored here.
    config = tiny_config(1)
    qwen2_config = config.to_qwen2_config()
    pairs = [
        (Qwen2DecoderLayer(qwen2_config, 0), Qwen2ParScaleDecoderLayer(config, 0)),
        (Qwen2Model(qwen2_config), Qwen2ParScaleModel(config)),
        (Qwen2ForCausalLM(qwen2_config), Qwen2ParScaleForCausalLM(config)),
    ]
    for qwen2, ours in pairs:
        assert set(vars(ours)) - {"aggregate_layer"} == set(vars(qwen2)), type(ours).__name__
        assert set(ours._modules) - {"aggregate_layer"} == set(qwen2._modules), type(ours).__name__
