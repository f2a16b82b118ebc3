"""The sweep summary's per-size verdicts and the seed spread it prints beside them."""

import pandas as pd

from parscale_law import ParScaleLaw, bootstrap
from sweeps.report import _print_summary

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


def test_summary_says_where_streams_helped_and_how_far_seeds_disagree(capsys):
    table = two_seed_table()
    boot = bootstrap(table, n=20, seed=0)
    _print_summary(boot.point, boot, table)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["large"].endswith("every P > 1 beat P = 1")
    assert lines["medium"].endswith("P = 2 beat P = 1")
    assert lines["small"].endswith("no P beat P = 1")
    assert "(means over 2 seeds; one cell's seeds differ by up to 0.0040)" in lines["(means"]


def test_a_grid_without_P_1_is_judged_against_its_smallest_P(capsys):
    table = two_seed_table()
    table = table[table["P"] > 1]
    boot = bootstrap(table, n=20, seed=0)
    _print_summary(boot.point, boot, table)
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["large"].endswith("every P > 2 beat P = 2")
    assert lines["medium"].endswith("no P beat P = 2")
