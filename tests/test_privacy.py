"""Differentially private D training: per-example clipping, the noise on the sum, Poisson sampling,
the accountant against dp-accounting's own computation, config-time refusals through the CLI, and
a killed private run resuming with the same epsilon."""
import json
import os
import signal
import subprocess
import sys
import time

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from dp_accounting import pld, rdp

from ganpipe.components import specs, train
from ganpipe.ganmodels import privacy
from ganpipe.ganmodels.accounting import PrivacyCost, calibrate_noise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


# ------------------------------------------------------------------ through Train and the CLI

TINY_PRIVATE_CGAN = {"family": "cgan", "network": {"width": 8, "embedding_dim": 4}, "latent_dim": 8,
                     "batch_size": 16, "log_every": 5, "sample_every": 1000, "eval_every": 0,
                     "privacy": {"noise_multiplier": 1.3, "l2_norm_clip": 1.0, "class_prior_noise": 40.0}}
RUN_TRAINING = """
import json, sys
from ganpipe.components import train
root, output_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with open(root + "/schema.json") as f:
    schema = json.load(f)
train.train_model(root, schema, output_dir, **params)
"""


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from test_train import write_processed_examples

    root = str(tmp_path_factory.mktemp("processed"))
    return root, write_processed_examples(root)


def train_private(digits, output_dir, **changes):
    root, schema = digits
    params = specs.TRAIN.resolve_parameters({**TINY_PRIVATE_CGAN, **changes}, "train")
    return train.train_model(root, schema, str(output_dir), log=lambda message: None, **params)


def test_reported_epsilon_is_dp_accounting_for_every_d_update_at_q_from_the_data(digits, tmp_path):
    """6 steps x 2 D updates on Poisson samples at q = 16 / 1733 training records (not the batch's
    own size, not per G step), after one noised histogram: dp-accounting's RDP epsilon of exactly
    those events at delta = 1 / (10 N), in model.json and in TensorBoard's last privacy/epsilon."""
    from tensorboard.backend.event_processing import event_accumulator

    info = train_private(digits, tmp_path, steps=6, d_steps=2)
    records = digits[1]["counts"]["train"]
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(40.0))
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(16 / records, dp_accounting.GaussianDpEvent(1.3)), 12))
    expected = accountant.get_epsilon(1 / (10 * records))
    guarantee = info["privacy"]
    assert guarantee["private_steps"] == 12 and guarantee["delta"] == pytest.approx(1 / (10 * records))
    assert guarantee["epsilon"] == pytest.approx(expected, abs=1e-4)
    events = event_accumulator.EventAccumulator(os.path.join(tmp_path, "logs", "train"),
                                                size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    logged = events.Tensors("privacy/epsilon")
    assert logged[-1].step == 6 and float(tf.make_ndarray(logged[-1].tensor_proto)) == pytest.approx(expected, rel=1e-6)


def test_killed_private_run_resumes_with_the_same_epsilon_and_weights(digits, tmp_path):
    """SIGKILL after the first checkpoint; the resumed run's private_steps, class prior, epsilon and
    D's weights equal an uninterrupted run's (the accountant's state is in the checkpoint)."""
    root, schema = digits
    params = {**TINY_PRIVATE_CGAN, "steps": 16, "checkpoint_every": 4}
    interrupted = str(tmp_path / "interrupted")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    process = subprocess.Popen([sys.executable, "-c", RUN_TRAINING, root, interrupted, json.dumps(params)],
                               env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = os.path.join(interrupted, "checkpoints", "checkpoint")
    while not os.path.exists(index) and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    resumed = train_private(digits, interrupted, steps=16, checkpoint_every=4)
    straight = train_private(digits, tmp_path / "straight", steps=16, checkpoint_every=4)
    assert resumed["privacy"] == straight["privacy"] and resumed["privacy"]["private_steps"] == 16
    after_resume = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(interrupted, "checkpoints")))
    uninterrupted = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "straight" / "checkpoints")))
    for name in uninterrupted.get_variable_to_shape_map():
        if name.startswith("gan/") and "OPTIMIZER" not in name:
            np.testing.assert_allclose(after_resume.get_tensor(name), uninterrupted.get_tensor(name), atol=1e-6,
                                       err_msg=name)


def test_target_epsilon_with_noise_sets_the_step_count(digits, tmp_path):
    privacy_settings = {"noise_multiplier": 2.0, "target_epsilon": 0.5, "delta": 1e-5}
    info = train_private(digits, tmp_path, privacy=privacy_settings)
    records = digits[1]["counts"]["train"]
    cost = PrivacyCost(2.0, 16 / records, 1e-5)
    assert info["steps"] == cost.steps_within(0.5) and info["privacy"]["epsilon"] <= 0.5
    assert cost.epsilon(info["steps"] + 1) > 0.5


DCGAN_CONFIG = """
pipeline: {name: refused}
train: {family: dcgan, steps: 2, privacy: {noise_multiplier: 1.0}}
"""


@pytest.mark.parametrize("override, named", [
    ("train.reuse_fakes=true", "train.reuse_fakes"), ("train.packing=2", "train.packing"),
    ("train.network.minibatch_std=4", "LayerNorm or GroupNorm"), ("train.loss=wasserstein", "gradient_penalty"),
    ("train.precision=mixed_float16", "float32"), ("train.family=lapgan", "train.family"),
    ("train.privacy.noise_multiplier=null", "noise_multiplier or target_epsilon"),
    ("train.privacy.accountant=moments", "rdp, pld")])
def test_refused_combinations_exit_2_before_anything_runs(tmp_path, override, named):
    config = tmp_path / "dp.yaml"
    config.write_text(DCGAN_CONFIG)
    result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "run", str(config), "--set", override, "--root",
                             str(tmp_path / "root")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr and not (tmp_path / "root").exists()


def test_run_table_and_model_card_state_the_guarantee():
    from ganpipe.components.base import Artifact
    from ganpipe.components.privacy import privacy_statement
    from ganpipe.pipeline.cli import _step_result

    model = Artifact("Model", "/models/7", properties={"epsilon": 2.5, "delta": 1e-5, "steps": 10})
    assert _step_result({"model": model}) == "/models/7 (epsilon 2.5, delta 1e-05)"
    guarantee = {"epsilon": 2.5, "delta": 1e-5, "accountant": "pld", "noise_multiplier": 1.2, "l2_norm_clip": 1.0,
                 "sampling_probability": 0.04, "training_records": 1600, "private_steps": 800,
                 "protects": "the examples", "not_protected": "the Classifier"}
    card = privacy_statement(guarantee)
    assert "epsilon = 2.5, delta = 1e-05" in card and "PLD" in card and "Not protected: the Classifier" in card
    assert "Not trained with differential privacy" in privacy_statement(None)
