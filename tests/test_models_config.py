"""Configs: the paper's 24 published parameter counts, the Hydra YAML files, and clear errors for configs
the model cannot be built from."""

import csv
from pathlib import Path

import pytest
import yaml

from models import Qwen2ParScaleConfig, config_from_mapping, count_parameters, parscale_config, sizes

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "parscale_law" / "data" / "published_losses.csv"
MODEL_CONFIGS = REPO / "conf" / "model"


def published_counts():
    with PUBLISHED.open() as handle:
        rows = {(row["size"], int(row["P"])): int(row["params"]) for row in csv.DictReader(handle)}
    assert len(rows) == 24
    return sorted(rows.items())


@pytest.mark.parametrize(("size_and_p", "params"), published_counts(), ids=lambda v: str(v))
def test_non_embedding_parameters_match_the_paper(size_and_p, params):
    size, parscale_n = size_and_p
    counts = count_parameters(parscale_config(size, parscale_n))
    assert counts.non_embedding == params
    assert counts.total == counts.embedding + counts.non_embedding
    assert counts.embedding == sizes.VOCAB_SIZE * sizes.PAPER_SIZES[size].hidden_size
    assert (counts.parscale == 0) == (parscale_n == 1)


def test_an_untied_head_counts_as_embedding():
    tied = count_parameters(parscale_config("tiny-96"))
    untied = count_parameters(parscale_config("tiny-96", tie_word_embeddings=False))
    assert untied.embedding == 2 * tied.embedding and untied.non_embedding == tied.non_embedding


@pytest.mark.parametrize("size", [*sizes.PAPER_SIZES, *sizes.TINY_SIZES, *sizes.SMALL_SIZES])
def test_yaml_file_is_the_size_config(size):
    mapping = yaml.safe_load((MODEL_CONFIGS / f"{size}.yaml").read_text())
    assert mapping["name"] == size
    assert config_from_mapping(mapping).to_dict() == parscale_config(size).to_dict()


def test_every_yaml_file_is_a_known_size():
    assert {path.stem for path in MODEL_CONFIGS.glob("*.yaml")} == {*sizes.PAPER_SIZES, *sizes.TINY_SIZES,
                                                                    *sizes.SMALL_SIZES}


def test_tiny_sizes_grow_in_width_like_the_papers():
    widths = [shape.hidden_size for shape in sizes.TINY_SIZES.values()]
    assert len(widths) == len(sizes.PAPER_SIZES) and widths == sorted(widths) and widths[-1] >= 3 * widths[0]


def test_config_round_trips_through_json(tmp_path):
    config = parscale_config("tiny-64", 4, parscale_prefix_init_std=0.01)
    config.save_pretrained(tmp_path)
    loaded = Qwen2ParScaleConfig.from_pretrained(tmp_path)
    assert (loaded.parscale_n, loaded.parscale_n_tokens, loaded.parscale_prefix_init_std) == (4, 4, 0.01)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"parscale_n": 0}, "parscale_n"),
        ({"parscale_n": 2, "parscale_n_tokens": 0}, "parscale_n_tokens"),
        ({"parscale_attn_smooth": 1.5}, "parscale_attn_smooth"),
        ({"parscale_prefix_init_std": -1.0}, "parscale_prefix_init_std"),
        ({"num_attention_heads": 7}, "num_attention_heads"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        parscale_config("tiny-96", **overrides)


def test_unknown_size_and_misspelt_yaml_key_are_refused():
    with pytest.raises(ValueError, match="tiny-96"):
        parscale_config("0.6B")
    with pytest.raises(ValueError, match="hiden_size"):
        config_from_mapping({"name": "x", "hiden_size": 64})
