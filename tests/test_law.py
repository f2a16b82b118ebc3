import numpy as np
import pytest

from parscale_law import ParScaleLaw

STACK = ParScaleLaw(E=0.6912, A=1.131e7, alpha=0.1894, k=0.3935)


def test_predict_matches_published_stack_losses():
    # Paper Table: 0.5B at P=1 -> 1.1722, at P=8 -> 1.1231 (fit residuals reach ~3e-3).
    assert STACK.predict(535813376, 1) == pytest.approx(1.1722, abs=5e-3)
    assert STACK.predict(545340552, 8) == pytest.approx(1.1231, abs=5e-3)


def test_multiplier_and_effective_params():
    assert STACK.multiplier(1) == 1.0
    assert STACK.multiplier(8) == pytest.approx(1 + 0.3935 * np.log(8))
    assert STACK.effective_params(1e9, 4) == pytest.approx(1e9 * (1 + 0.3935 * np.log(4)))


def test_streams_for_multiplier_inverts_multiplier():
    P = np.array([1.0, 2.0, 3.0, 8.0, 16.0])
    assert STACK.streams_for_multiplier(STACK.multiplier(P)) == pytest.approx(P)
    with pytest.raises(ValueError, match="k <= 0"):
        ParScaleLaw(E=1, A=1e7, alpha=0.2, k=0.0).streams_for_multiplier(1.5)


def test_params_for_loss_inverts_predict():
    for P in (1, 2, 8):
        N = STACK.params_for_loss(STACK.predict(2e9, P), P)
        assert N == pytest.approx(2e9, rel=1e-10)
    assert np.isinf(STACK.params_for_loss(STACK.E - 0.01, 1))


def test_A_prime_convention():
    law = ParScaleLaw.from_A_prime(E=0.6912, A_prime=STACK.A_prime, alpha=0.1894, k=0.3935)
    assert law.A == pytest.approx(STACK.A, rel=1e-12)
    assert law.predict(1e9, 4) == pytest.approx(STACK.A_prime / (1e9 * STACK.multiplier(4)) ** STACK.alpha + STACK.E)


def test_streams_that_hurt():
    law = ParScaleLaw(E=1.5, A=4e7, alpha=0.22, k=-0.2)
    assert law.multiplier(8) == pytest.approx(1 - 0.2 * np.log(8)) and law.multiplier(8) < 1
    assert law.predict(1e9, 8) > law.predict(1e9, 1)
    assert law.params_for_loss(1.8, 8) > law.params_for_loss(1.8, 1)
    # Past P = e^5 the multiplier is below zero: no N reaches any loss, and the loss is undefined.
    assert np.isinf(law.params_for_loss(1.8, 1000)) and np.isnan(law.predict(1e9, 1000))
