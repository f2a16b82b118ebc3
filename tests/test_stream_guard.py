"""The guard of the tiny grid: at the demo's settings the trained streams matter, and the check says so only
when they are connected.

Why not "P = 4 below P = 1": the search (experiments/tiny_search_trials.csv) found that at these sizes most of
what P gains over P = 1 comes from the prefix slots alone. With the prefixes zeroed and frozen, so that every
stream computes the same thing, P = 4 still beat P = 1 at tiny-128 by 0.034 (two seeds) and by 0.21 at half
the budget, so a P-against-P = 1 test would pass with the streams disconnected. The ablation below cannot:
with identical streams, or a fixed aggregator, its gains are exactly 0.

Measured at these settings (tiny-32, P = 4, 448 steps, seeds 0, 1, 2): stream gain 0.0010, 0.0045, 0.0040;
aggregator gain 0.0018, 0.0039, 0.0037. The threshold is half the smallest of them.
"""

import pytest
import torch

from experiments.tiny_search import run_cell

torch.set_num_threads(1)

THRESHOLD = 5e-4


@pytest.mark.slow
def test_trained_streams_matter_at_the_demo_settings(tmp_path):
    row = run_cell("base", "tiny-32", 4, 0, tmp_path)
    assert row["stream_gain"] > THRESHOLD, row
    assert row["aggregator_gain"] > THRESHOLD, row


@pytest.mark.slow
@pytest.mark.parametrize("control, gain",
                         [("base-prefixes-off", "stream_gain"), ("base-aggregator-off", "aggregator_gain")])
def test_the_check_fails_with_the_streams_disconnected(tmp_path, control, gain):
    row = run_cell(control, "tiny-32", 4, 0, tmp_path)
    assert row[gain] <= 1e-5 < THRESHOLD, row
