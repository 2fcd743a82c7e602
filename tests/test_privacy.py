"""Differentially private D training: per-example clipping, the noise on the sum, Poisson sampling,
the accountant against dp-accounting's own computation, config-time refusals through the CLI, and
a killed private run resuming with the same epsilon."""
import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from dp_accounting import pld, rdp

from ganpipe.ganmodels import privacy
from ganpipe.ganmodels.accounting import PrivacyCost, calibrate_noise

SEED = tf.constant([3, 4], tf.int64)


def linear_gradients(examples, *, l2_norm_clip, noise_multiplier=0.0, expected_batch_size, scale=1.0):
    """Private gradient of the per-example loss scale * <w, x_i>, whose gradient is scale * x_i."""
    w = tf.Variable(tf.zeros([examples.shape[1]]))
    grads = privacy.private_gradients(lambda x: scale * tf.reduce_sum(w * x), (tf.constant(examples),), [w],
                                      l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                                      expected_batch_size=expected_batch_size, seed=SEED)
    return grads[0].numpy()


# ------------------------------------------------------------------ the private gradient


def test_each_example_is_clipped_before_the_sum_and_divided_by_the_expected_batch():
    """Gradients (3, 4) (norm 5) and (0.3, 0.4) (norm 0.5), C = 1: the first is scaled to (0.6, 0.8),
    the second kept, sum (0.9, 1.2), over the expected batch 4 (not the 2 drawn): (0.225, 0.3).
    Clipping the sum instead gives (0.15, 0.2); dividing by the drawn count gives (0.45, 0.6)."""
    examples = np.array([[3.0, 4.0], [0.3, 0.4]], "float32")
    np.testing.assert_allclose(linear_gradients(examples, l2_norm_clip=1.0, expected_batch_size=4),
                               [0.225, 0.3], rtol=1e-6)


def test_clipping_norm_spans_all_variables_together():
    """Two variables each receiving (3, 4): the example's norm is sqrt(50), not 5 per variable."""
    a, b = tf.Variable(tf.zeros([2])), tf.Variable(tf.zeros([2]))
    x = tf.constant([[3.0, 4.0]])
    grads = privacy.private_gradients(lambda x: tf.reduce_sum(a * x) + tf.reduce_sum(b * x), (x,), [a, b],
                                      l2_norm_clip=1.0, noise_multiplier=0.0, expected_batch_size=1, seed=SEED)
    for grad in grads:
        np.testing.assert_allclose(grad.numpy(), np.array([3.0, 4.0]) / np.sqrt(50.0), rtol=1e-6)


def test_an_empty_poisson_sample_gives_only_noise():
    grads = linear_gradients(np.zeros((0, 3), "float32"), l2_norm_clip=1.0, expected_batch_size=8)
    np.testing.assert_array_equal(grads, np.zeros(3))


def test_noise_has_std_sigma_c_over_the_expected_batch_once_per_sum():
    """20,000 coordinates, three examples with zero gradient, sigma = 2, C = 0.5, expected batch 4:
    the noise std must be sigma C / 4 = 0.25. The sample std's relative standard error is
    1 / sqrt(2 n) = 0.005; the test fails beyond 5 of them, a false alarm rate below 1e-6. Noise per
    example (sqrt(3) x), sigma without C (2 x) or noise not divided by the batch (4 x) fail it."""
    examples = np.ones((3, 20_000), "float32")
    noise = linear_gradients(examples, l2_norm_clip=0.5, noise_multiplier=2.0, expected_batch_size=4, scale=0.0)
    standard_error = 1.0 / np.sqrt(2 * noise.size)
    assert abs(noise.std() / 0.25 - 1.0) < 5 * standard_error
    assert abs(noise.mean()) < 5 * 0.25 / np.sqrt(noise.size)


def test_noise_is_a_function_of_the_seed():
    examples = np.ones((2, 50), "float32")
    first = linear_gradients(examples, l2_norm_clip=1.0, noise_multiplier=1.0, expected_batch_size=2, scale=0.0)
    again = linear_gradients(examples, l2_norm_clip=1.0, noise_multiplier=1.0, expected_batch_size=2, scale=0.0)
    np.testing.assert_array_equal(first, again)


# ------------------------------------------------------------------ sampling and the prior


def test_poisson_sample_takes_each_record_with_probability_q():
    """10,000 records at q = 0.05: the count is Binomial(10000, 0.05), 500 +- 21.8; within 5 sd
    (false alarm < 1e-6). The records of two seeds differ, each index appears at most once."""
    first = privacy.poisson_sample(10_000, 0.05, SEED).numpy()
    assert abs(len(first) - 500) < 5 * np.sqrt(10_000 * 0.05 * 0.95)
    assert len(set(first)) == len(first) and first.max() < 10_000
    assert not np.array_equal(first, privacy.poisson_sample(10_000, 0.05, SEED + 1).numpy())


def test_poisson_batches_depend_only_on_the_step():
    examples, labels = np.arange(200, dtype="float32")[:, None], np.arange(200, dtype="int32")
    batches = privacy.poisson_batches(examples, labels, sampling_probability=0.1, d_steps=2, seed=5)
    straight = [step for step in batches.take(4)]
    resumed = next(iter(privacy.poisson_batches(examples, labels, sampling_probability=0.1, d_steps=2, seed=5,
                                                start_step=3)))
    assert len(straight[3]) == 2
    for (x, y), (x_resumed, y_resumed) in zip(straight[3], resumed):
        np.testing.assert_array_equal(x.numpy()[:, 0], y.numpy())
        np.testing.assert_array_equal(y_resumed.numpy(), y.numpy())
    assert not np.array_equal(straight[3][0][1].numpy(), straight[3][1][1].numpy())  # each D step its own sample


def test_noised_histogram_is_the_class_frequencies_plus_noise():
    labels = tf.constant([0] * 600 + [1] * 300 + [2] * 100)
    exact = privacy.noised_histogram(labels, 3, 0.0, SEED).numpy()
    np.testing.assert_allclose(exact, [0.6, 0.3, 0.1], rtol=1e-6)
    noised = privacy.noised_histogram(labels, 3, 50.0, SEED).numpy()
    assert abs(noised.sum() - 1.0) < 1e-6 and not np.allclose(noised, exact)


# ------------------------------------------------------------------ the accountant


@pytest.mark.parametrize("name, make", [("rdp", rdp.RdpAccountant), ("pld", pld.PLDAccountant)])
def test_epsilon_is_dp_accountings_own_for_the_same_events(name, make):
    cost = PrivacyCost(noise_multiplier=1.1, sampling_probability=0.02, delta=1e-5, accountant=name,
                       class_prior_noise=30.0)
    accountant = make()
    accountant.compose(dp_accounting.GaussianDpEvent(30.0))
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(1.1)), 300))
    assert cost.epsilon(300) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)


def test_steps_within_a_budget_is_the_last_step_under_it():
    cost = PrivacyCost(noise_multiplier=1.0, sampling_probability=0.05, delta=1e-5)
    steps = cost.steps_within(2.0)
    assert cost.epsilon(steps) <= 2.0 < cost.epsilon(steps + 1)


def test_calibrated_noise_reaches_the_target():
    sigma = calibrate_noise(3.0, 200, sampling_probability=0.05, delta=1e-5)
    cost = PrivacyCost(sigma, 0.05, 1e-5)
    assert cost.epsilon(200) <= 3.0 < PrivacyCost(sigma * 0.97, 0.05, 1e-5).epsilon(200)
