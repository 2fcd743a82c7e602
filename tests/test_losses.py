"""GAN losses against values computed by hand."""
import math

import numpy as np
import pytest

from ganpipe.ganmodels import losses


def logit(p):
    return np.array([math.log(p / (1 - p))], dtype="float32")


def value(x):
    return float(np.asarray(x)[0])


@pytest.mark.parametrize("p, cost", [(0.1, 2.302585), (0.9, 0.105361), (0.5, math.log(2))])
def test_real_sample_costs_minus_log_d(p, cost):
    real, _ = losses.bce_discriminator(logit(p), logit(0.5), np.ones(1, "float32"))
    assert value(real) == pytest.approx(cost, rel=1e-5)


def test_fake_sample_costs_minus_log_one_minus_d():
    _, fake = losses.bce_discriminator(logit(0.5), logit(0.9), np.ones(1, "float32"))
    assert value(fake) == pytest.approx(2.302585, rel=1e-5)


def test_generator_losses():
    fooled = logit(0.9)
    assert value(losses.non_saturating_generator(fooled)) == pytest.approx(0.105361, rel=1e-5)  # -ln 0.9
    assert value(losses.minimax_generator(fooled)) == pytest.approx(-2.302585, rel=1e-5)  # ln(1 - 0.9)


def test_soft_targets_interpolate_the_two_costs():
    real, _ = losses.bce_discriminator(logit(0.9), logit(0.5), np.full(1, 0.9, "float32"))
    assert value(real) == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), rel=1e-5)


def test_stable_for_extreme_logits():
    huge = np.array([-200.0, 200.0], dtype="float32")
    real, fake = losses.bce_discriminator(huge, huge, np.ones(2, "float32"))
    assert np.allclose(real, [200.0, 0.0]) and np.allclose(fake, [0.0, 200.0])
    assert np.all(np.isfinite(losses.minimax_generator(huge)))


def test_wasserstein_hinge_least_squares():
    real, fake = np.array([2.0], "float32"), np.array([-0.5], "float32")
    ones = np.ones(1, "float32")
    w_real, w_fake = losses.wasserstein_discriminator(real, fake, ones)
    assert value(w_real) + value(w_fake) == pytest.approx(-2.5)
    h_real, h_fake = losses.hinge_discriminator(real, fake, ones)
    assert (value(h_real), value(h_fake)) == pytest.approx((0.0, 0.5))
    ls_real, ls_fake = losses.least_squares_discriminator(real, fake, ones)
    assert (value(ls_real), value(ls_fake)) == pytest.approx((0.5, 0.125))
    assert value(losses.least_squares_generator(fake)) == pytest.approx(1.125)
    assert value(losses.wasserstein_generator(fake)) == pytest.approx(0.5)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="non_saturating"):
        losses.get("wgan")
