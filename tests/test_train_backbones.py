"""Other backbone families in the sweeps (`model.backbone=qwen3|llama|...`): a tiny Qwen3 and a tiny Llama train at
P = 2 through the same loop and resume exactly, two FSDP2 processes match one, stage 2 starts from a plain Qwen3
checkpoint, a Qwen3 stage-1 run or a grid's stage-1 cell (the activations start reading Qwen3's normed keys),
the planner and the cost model count each family as it is built (Qwen3's head_dim and q/k norms), an unknown
family is refused in one line, and the default stays the released Qwen2 layout."""

import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from analysis.cost import ModelShape
from models import ParScaleForCausalLM, Qwen2ParScaleForCausalLM, count_parameters, parscale_config
from models.presets import backbone_of, config_from_mapping, new_model
from sweeps.errors import ConfigError
from sweeps.grid import resources
from sweeps.run import stages
from sweeps.run.build import build_trained, model_config
from sweeps.run.checkpoint import complete_checkpoints, latest_checkpoint, read_meta
from sweeps.run.config import run_id
from sweeps.run.distributed import Environment
from sweeps.run.loop import train
from sweeps.run.loss import CausalLMLoss
from sweeps.run.tracking import read_metrics

from train_helpers import REPO, child_env, run_app, tiny_config, tiny_overrides

# Qwen3 with its own head_dim (32, not 96 / 4 heads), so that every count below sees the difference.
FAMILIES = {
    "qwen3": ["model.backbone=qwen3", "+model.head_dim=32"],
    "llama": ["model.backbone=llama"],
}
LAYERS = {"qwen3": "Qwen3DecoderLayer", "llama": "LlamaDecoderLayer"}
RESUME_STEPS = 200  # long enough that the child is still training when it is killed


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_run(request, tmp_path_factory):
    """An uninterrupted P = 2 run of the family."""
    family = request.param
    run_dir = tmp_path_factory.mktemp(family) / "run"
    config = tiny_config(run_dir, RESUME_STEPS, "parscale_n=2", *FAMILIES[family])
    return family, config, train(config), read_metrics(run_dir / "metrics.jsonl")


def test_a_family_builds_its_own_layers_and_the_loss_is_the_models(family_run):
    family, config, _, _ = family_run
    built = model_config(config, vocab_size=259)
    env = Environment(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trained, lm = build_trained(config, built, env, "ddp", compile_blocks=False)
    assert isinstance(lm, ParScaleForCausalLM) and type(lm.model.layers[0]).__name__ == LAYERS[family]
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert trained(ids).item() == pytest.approx(lm(ids, labels=ids).loss.item(), abs=1e-5)


def test_a_family_trains_saves_and_resumes_exactly(family_run, tmp_path):
    """Killed (SIGKILL) once it has a checkpoint, `python -m sweeps.train ... model.backbone=<family>` resumes
    in process onto the uninterrupted run's curve; its model/ loads back as its family."""
    family, config, reference, reference_rows = family_run
    assert reference["status"] == "done" and all(map(torch.isfinite, torch.tensor([r["loss"] for r in reference_rows])))
    assert reference_rows[-1]["loss"] < reference_rows[0]["loss"] - 1.0
    loaded = AutoModelForCausalLM.from_pretrained(config.run_dir + "/model")
    assert isinstance(loaded, ParScaleForCausalLM) and backbone_of(loaded.config).model_type == family

    run_dir = tmp_path / "run"
    # Checkpoints 50 steps apart; the kill waits for a row past the first, so that no later one can be complete
    # before its step's row is written (the loop writes a step's row after its checkpoint).
    settings = ["parscale_n=2", "checkpoint_interval=50", *FAMILIES[family]]
    overrides = [item for item in tiny_overrides(run_dir, RESUME_STEPS, *settings) if not item.startswith("run_dir=")]
    child = subprocess.Popen([sys.executable, "-m", "sweeps.train", *overrides, f"hydra.run.dir={run_dir}"],
                             cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    while child.poll() is None and not (complete_checkpoints(run_dir) and metrics.read_text().count("\n") > 50):
        time.sleep(0.005)
    child.kill()
    output = child.communicate(timeout=60)[0]
    assert child.returncode == -signal.SIGKILL, output[-2000:]

    assert read_meta(latest_checkpoint(run_dir))["step"] == 50
    resumed = train(tiny_config(run_dir, RESUME_STEPS, *settings))
    assert resumed["run_id"] == reference["run_id"]
    assert resumed["loss"] == pytest.approx(reference["loss"], abs=1e-6)
    rows = read_metrics(metrics)
    assert [row["step"] for row in rows] == list(range(1, RESUME_STEPS + 1))  # nothing lost, nothing twice
    for row, expected in zip(rows, reference_rows, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-6)


@pytest.mark.slow
def test_two_fsdp_processes_shard_qwen3_layers_and_match_one_process(tmp_path):
    """torchrun, two gloo processes, FSDP2 over Qwen3's decoder layers: the curve of one process that
    accumulates the same global batch of 8 (as tests/test_train_distributed.py does for the released layout)."""
    steps, batch = 6, ["global_batch_size=8", "micro_batch_size=4", "parscale_n=2", f"tokens={6 * 8 * 32}"]
    train(tiny_config(tmp_path / "one", steps, *batch, *FAMILIES["qwen3"]))
    overrides = [item for item in tiny_overrides(tmp_path / "two", steps, *batch, *FAMILIES["qwen3"])
                 if not item.startswith("run_dir=")]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), "-m", "sweeps.train", *overrides, "strategy=fsdp",
         f"hydra.run.dir={tmp_path / 'two'}"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "2 process(es) (fsdp)" in done.stdout
    one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [row["step"] for row in two] == list(range(1, steps + 1))
    for row, expected in zip(two, one, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-5)


def test_stage2_starts_from_a_plain_qwen3_checkpoint_and_from_a_qwen3_stage1_run(tmp_path):
    from transformers import Qwen3ForCausalLM

    plain = Qwen3ForCausalLM(backbone_of(parscale_config("tiny-96", backbone="qwen3", head_dim=32)))
    plain.save_pretrained(tmp_path / "qwen3")
    family = FAMILIES["qwen3"]
    frozen = ["parscale_n=2", "freeze_backbone=true", *family]
    result = train(tiny_config(tmp_path / "from-plain", 2, f"init_from={tmp_path / 'qwen3'}", *frozen))
    assert result["status"] == "done"
    after = load_file(tmp_path / "from-plain" / "model" / "model.safetensors")
    backbone = {name: value for name, value in plain.state_dict().items() if name != "lm_head.weight"}  # tied
    assert any(name.endswith("k_norm.weight") for name in backbone)
    for name, value in backbone.items():  # the frozen backbone is the checkpoint's, q/k norms included
        assert torch.equal(after[name], value), name
    assert any(name.endswith("self_attn.prefix_k") for name in after)

    train(tiny_config(tmp_path / "stage1", 3, *family))
    result = train(tiny_config(tmp_path / "stage2", 2, f"init_from={tmp_path / 'stage1'}", *frozen))
    assert result["status"] == "done" and result["P"] == 2

    with pytest.raises(ConfigError, match="has model_type=qwen3 but model=tiny-96 has llama"):
        train(tiny_config(tmp_path / "wrong", 2, f"init_from={tmp_path / 'qwen3'}", "parscale_n=2",
                          *FAMILIES["llama"]))


def test_a_qwen3_two_stage_cell_starts_its_prefixes_from_the_backbones_keys(tmp_path):
    """A grid's stage-1 and stage-2 cells on Qwen3: the branch loads into the P = 2 model and the `activations`
    start copies the backbone's normed keys and its values into the prefixes."""
    cell = ["stage2_fraction=0.25", "optim.schedule=wsd", "optim.decay_fraction=0.25", *FAMILIES["qwen3"]]
    stage1 = train(tiny_config(tmp_path / "stage1", 8, "stage=1", *cell))
    result = train(tiny_config(tmp_path / "stage2", 8, "stage=2", "parscale_n=2", f"init_from={tmp_path / 'stage1'}",
                               "stage2.prefix_init=activations", *cell))
    assert result["status"] == "done" and abs(result["eval_loss_start"] - stage1["eval_loss"]) < 0.3
    rows = read_metrics(tmp_path / "stage2" / "metrics.jsonl")
    assert [row["step"] for row in rows] == [7, 8] and all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)


def test_the_activations_start_of_a_qwen3_prefix_is_its_first_layers_normed_keys():
    """Layer 0 sees the embeddings whatever the prefixes, so its prefixes are computable by hand: stream i's
    keys are k_norm(k_proj(.)) of the last n tokens of row i, its values v_proj(.)."""
    torch.manual_seed(0)
    lm = new_model(parscale_config("tiny-96", 2, backbone="qwen3", head_dim=32))
    rows = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    stages.init_prefixes_from_activations(CausalLMLoss(lm), lm, rows)
    layer, n = lm.model.layers[0], lm.config.parscale_n_tokens
    attention = layer.self_attn
    with torch.no_grad():
        states = layer.input_layernorm(lm.model.embed_tokens(rows))[:, -n:]
        keys = attention.k_norm(attention.k_proj(states).unflatten(-1, (-1, attention.head_dim)))
        values = attention.v_proj(states).unflatten(-1, (-1, attention.head_dim))
    assert torch.allclose(attention.prefix_k, keys.transpose(1, 2), atol=1e-6)
    assert torch.allclose(attention.prefix_v, values.transpose(1, 2), atol=1e-6)


@pytest.mark.parametrize(("size", "family", "fields"), [
    ("tiny-96", "qwen3", {"head_dim": 32}),
    ("tiny-96", "llama", {}),
    ("0.5B", "qwen3", {"head_dim": 128}),
    ("0.5B", "llama", {"attention_bias": True, "mlp_bias": True}),
])
@pytest.mark.parametrize("parscale_n", [1, 4])
def test_the_planner_and_the_cost_model_count_a_family_as_built(size, family, fields, parscale_n):
    """The run's conf/model mapping with model.backbone and the family's fields, as a sweep composes it."""
    mapping = {**yaml.safe_load((REPO / "conf" / "model" / f"{size}.yaml").read_text()), "backbone": family,
               **fields}
    config = config_from_mapping({**mapping, "parscale_n": parscale_n})
    assert config.to_dict() == parscale_config(size, parscale_n, backbone=family, **fields).to_dict()
    with torch.device("meta"):
        built = sum(param.numel() for param in new_model(config).parameters())
    counts = count_parameters(config)
    shape = resources.shape_of_model(mapping, parscale_n)
    assert counts.total == built == shape.total_params
    assert ModelShape.from_config(config).total_params(parscale_n) == built
    assert ModelShape.from_config(config).non_embedding_params(parscale_n) == counts.non_embedding

    head_dim = fields.get("head_dim", config.backbone_config.hidden_size // config.backbone_config.num_attention_heads)
    assert shape.attention_width == config.backbone_config.num_attention_heads * head_dim
    assert ModelShape.from_config(config).head_dim == head_dim


def test_the_attention_flops_follow_head_dim():
    """Qwen3's head_dim of 32 at width 96 and 4 heads: scores over 128 channels, not 96."""
    narrow = resources.shape_of("tiny-96", 2, (("backbone", "qwen3"),))
    wide = resources.shape_of("tiny-96", 2, (("backbone", "qwen3"), ("head_dim", 32)))
    assert (narrow.attention_width, wide.attention_width) == (96, 128)
    growth = resources.model_flops_per_token(wide, 64) - resources.model_flops_per_token(narrow, 64)
    context = (64 + 1) / 2 + wide.prefix_tokens
    per_stream_layer = 6 * (wide.layer_matrix_params - narrow.layer_matrix_params) + 12 * (128 - 96) * context
    assert growth == pytest.approx(2 * wide.num_layers * per_stream_layer)  # P = 2 streams


def test_the_default_backbone_is_the_released_layout_with_the_same_run_id(tmp_path):
    config = tiny_config(tmp_path, 2, "parscale_n=2")
    assert config.model["backbone"] == "qwen2"
    assert isinstance(new_model(config_from_mapping(config.model)), Qwen2ParScaleForCausalLM)
    without_key = tiny_config(tmp_path, 2, "parscale_n=2", "~model.backbone")
    assert "backbone" not in without_key.model and run_id(without_key) == run_id(config)
    assert run_id(tiny_config(tmp_path, 2, "parscale_n=2", *FAMILIES["llama"])) != run_id(config)


def test_an_unknown_backbone_is_refused_in_one_line(tmp_path):
    done = run_app("model=tiny-32", "tokens=2048", "model.backbone=gpt-nope", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "gpt-nope" in done.stderr and "qwen3" in done.stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="fields of BertConfig"):  # not a decoder of this shape
        train(tiny_config(tmp_path / "bert", 2, "model.backbone=bert"))
