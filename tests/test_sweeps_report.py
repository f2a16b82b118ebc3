"""The sweep summary's per-size verdicts and the seed spread it prints beside them."""

import pandas as pd

from parscale_law import ParScaleLaw, bootstrap
from sweeps.grid.report import _print_summary, paired_effects

LAW = ParScaleLaw(E=1.5, A=2.0e4, alpha=0.4, k=0.3)
SIZES = {"small": 40_000, "medium": 160_000, "large": 640_000}


def two_seed_table() -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for size, params in SIZES.items():
            for P in (1, 2, 4, 8):
                loss = float(LAW.predict(params, P)) + 0.004 * seed
                if size == "medium" and P > 2:
                    loss += 0.08  # streams beyond two made it worse
                if size == "small" and P > 1:
                    loss += 0.2  # no number of streams helped
                rows.append({"dataset": "synthetic", "size": size, "params": params * (1 + 0.01 * P), "P": P,
                             "loss": loss, "seed": seed, "status": "done"})
    return pd.DataFrame(rows)


def first_line_by_first_word(out: str) -> dict[str, str]:
    lines: dict[str, str] = {}
    for line in out.splitlines():
        if line.strip():
            lines.setdefault(line.split()[0], line)
    return lines


def test_summary_says_where_streams_helped_and_how_far_seeds_disagree(capsys):
    table = two_seed_table()
    boot = bootstrap(table, n=20, seed=0)
    _print_summary(boot.point, boot, table)
    lines = first_line_by_first_word(capsys.readouterr().out)
    assert lines["large"].endswith("every P > 1 beat P = 1")
    assert lines["medium"].endswith("P = 2 beat P = 1")
    assert lines["small"].endswith("no P beat P = 1")
    assert "(means over 2 seeds; one cell's seeds differ by up to 0.0040)" in lines["(means"]


def test_a_grid_without_P_1_is_judged_against_its_smallest_P(capsys):
    table = two_seed_table()
    table = table[table["P"] > 1]
    boot = bootstrap(table, n=20, seed=0)
    _print_summary(boot.point, boot, table)
    lines = first_line_by_first_word(capsys.readouterr().out)
    assert lines["large"].endswith("every P > 2 beat P = 2")
    assert lines["medium"].endswith("no P beat P = 2")


def test_paired_effects_compare_each_seed_with_its_own_P_1():
    table = two_seed_table()
    # seed 1 of the large P = 8 cell lost 0.05 more: only that pair's difference moves
    table.loc[(table["size"] == "large") & (table["P"] == 8) & (table["seed"] == 1), "loss"] += 0.05
    effects = paired_effects(table).set_index(["size", "P"])
    large_P8 = effects.loc[("large", 8)]
    expected = float(LAW.predict(SIZES["large"], 8) - LAW.predict(SIZES["large"], 1))
    assert large_P8["seeds"] == 2
    assert abs(large_P8["min"] - expected) < 1e-12 and abs(large_P8["max"] - (expected + 0.05)) < 1e-12
    assert abs(effects.loc[("small", 2), "min"] - effects.loc[("small", 2), "max"]) < 1e-12
    small_P2 = float(LAW.predict(SIZES["small"], 2) - LAW.predict(SIZES["small"], 1)) + 0.2
    assert abs(effects.loc[("small", 2), "mean"] - small_P2) < 1e-12


def test_summary_prints_each_sizes_paired_effect_over_seeds(capsys):
    table = two_seed_table()
    boot = bootstrap(table, n=20, seed=0)
    _print_summary(boot.point, boot, table)
    out = capsys.readouterr().out
    assert "P's effect per seed" in out
    small_line = [line for line in out.splitlines() if line.split()[:1] == ["small"]][-1]
    assert "P=2: +0.1448 [+0.1448, +0.1448]" in small_line  # the 0.2 penalty less the law's gain, both seeds
