import numpy as np
import pandas as pd
import pytest


def synthetic_table(law, N, P, sigma=0.0, seed=0):
    """Runs on the grid N x P with losses from ``law.predict`` times log-normal noise of size sigma."""
    rng = np.random.default_rng(seed)
    NN, PP = np.meshgrid(np.asarray(N, float), np.asarray(P, float), indexing="ij")
    loss = law.predict(NN.ravel(), PP.ravel()) * np.exp(sigma * rng.standard_normal(NN.size))
    return pd.DataFrame({"params": NN.ravel(), "P": PP.ravel(), "loss": loss})


@pytest.fixture
def make_synthetic():
    return synthetic_table
