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
    """A real logit inside the hinge margin and away from the least-squares target, where each
    term's constant matters; every term checked on its own."""
    real, fake = np.array([0.5], "float32"), np.array([-0.25], "float32")
    ones = np.ones(1, "float32")
    w_real, w_fake = losses.wasserstein_discriminator(real, fake, ones)
    assert (value(w_real), value(w_fake)) == pytest.approx((-0.5, -0.25))
    h_real, h_fake = losses.hinge_discriminator(real, fake, ones)
    assert (value(h_real), value(h_fake)) == pytest.approx((0.5, 0.75))
    assert value(losses.hinge_discriminator(np.array([2.0], "float32"), fake, ones)[0]) == 0.0  # beyond the margin
    ls_real, ls_fake = losses.least_squares_discriminator(real, fake, ones)
    assert (value(ls_real), value(ls_fake)) == pytest.approx((0.125, 0.03125))  # (0.5 - 1)^2 / 2, 0.25^2 / 2
    assert value(losses.least_squares_discriminator(real, fake, np.full(1, 0.9, "float32"))[0]) == pytest.approx(0.08)
    assert value(losses.least_squares_generator(fake)) == pytest.approx(0.78125)  # 1.25^2 / 2
    assert value(losses.wasserstein_generator(fake)) == pytest.approx(0.25)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="non_saturating"):
        losses.get("wgan")


# ------------------------------------------------------------ training metrics per loss


def metrics_of(name, real, fake):
    stats = losses.get(name).training_metrics(np.array(real, "float32"), np.array(fake, "float32"))
    return {key: float(value) for key, value in stats.items()}


def test_least_squares_accuracy_uses_its_own_threshold_of_one_half():
    """A perfect least-squares D (reals near 1, fakes near 0): accuracy 1, not the 0.77 a logit
    threshold of 0 would give."""
    perfect = metrics_of("least_squares", [1.0, 0.9, 0.6, 1.2], [0.0, 0.1, 0.4, 0.3, -0.1])
    assert perfect["d_accuracy"] == 1.0
    assert (perfect["d_real"], perfect["d_fake"]) == pytest.approx((0.925, 0.14))
    assert metrics_of("least_squares", [0.5], [0.5])["d_accuracy"] == 0.5  # 0.5 counts as real


def test_bce_metrics_and_the_js_lower_bound():
    undecided = metrics_of("non_saturating", [0.0, 0.0], [0.0, 0.0])  # D = 1/2 everywhere: V = -log 4
    assert undecided["value"] == pytest.approx(-math.log(4.0), rel=1e-6)
    assert undecided["js_lower_bound"] == pytest.approx(0.0, abs=1e-6)
    assert undecided["d_accuracy"] == 0.5 and undecided["d_real"] == pytest.approx(0.5)
    certain = metrics_of("minimax", [30.0, 40.0], [-30.0, -50.0])  # disjoint supports: JS = log 2
    assert certain["js_lower_bound"] == pytest.approx(math.log(2.0), rel=1e-6)
    assert (certain["d_accuracy"], certain["d_real"], certain["d_fake"]) == pytest.approx((1.0, 1.0, 0.0), abs=1e-6)
    wrong = metrics_of("non_saturating", [-2.0], [3.0])  # a bad D: the bound goes negative, as a bound may
    assert wrong["js_lower_bound"] < 0 and wrong["d_accuracy"] == 0.0


def test_hinge_and_wasserstein_report_their_own_quantities():
    hinge = metrics_of("hinge", [2.0, 0.5, 1.0], [-3.0, -0.5])
    assert hinge == pytest.approx({"d_accuracy": 1.0, "real_inside_margin": 1 / 3, "fake_inside_margin": 0.5})
    critic = metrics_of("wasserstein", [5.0, 7.0], [1.0, 2.0])
    assert critic == pytest.approx({"wasserstein_estimate": 4.5})  # no accuracy: scores have no threshold
    for name, loss in losses.LOSSES.items():
        assert set(metrics_of(name, [1.0], [0.0])) | {"d_loss", "g_loss"} == set(loss.metric_names), name


def test_loss_properties_that_the_train_step_relies_on():
    """Targets exist only for BCE and least squares; D's fake slope is non-zero wherever G's is only
    for BCE and Wasserstein (hinge: flat below -1; least squares: zero at 0)."""
    uses_targets = {name for name, loss in losses.LOSSES.items() if loss.uses_targets}
    assert uses_targets == {"non_saturating", "minimax", "least_squares"}
    exact = {name for name, loss in losses.LOSSES.items() if loss.d_slope_never_zero}
    assert exact == {"non_saturating", "minimax", "wasserstein"}
    real, fake = losses.hinge_discriminator(np.array([0.0]), np.array([-1.5], "float32"), None)
    assert value(fake) == 0.0  # the flat part that rules hinge out


def test_the_train_spec_offers_exactly_the_registered_losses():
    from ganpipe.components import specs

    assert specs.LOSSES == tuple(losses.LOSSES)
