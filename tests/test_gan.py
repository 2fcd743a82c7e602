"""The GAN core: the exact updates of one step (analytic, and the reuse_fakes joint step against
explicit two-pass gradients), which weights each step moves (frozen D with BatchNorm and spectral
norm), k:1 steps on their own slices, label flips, options checked against the loss, EMA,
metrics per loss, precisions, checkpoints, and a learning test on a 1-D Gaussian."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import keras

from ganpipe import ganmodels

LATENT = 8
SHAPE = (8, 8, 1)


def tiny_gan(seed=0, **options):
    keras.utils.set_random_seed(seed)
    generator, discriminator = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8)
    return ganmodels.GAN(generator, discriminator, LATENT, seed=seed, **options)


def images(n=64, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *SHAPE)).astype("float32")


def snapshot(variables):
    return [np.array(v.numpy()) for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_discriminator_step_moves_only_d_and_generator_step_only_g():
    gan = tiny_gan()
    gan.compile()
    real = tf.constant(images(16))
    g_before, d_before = snapshot(gan.generator.trainable_variables), snapshot(gan.discriminator.trainable_variables)
    gan.discriminator_step(real, None, 0)
    assert not any(changed(g_before, gan.generator.trainable_variables))
    assert all(changed(d_before, gan.discriminator.trainable_variables))

    g_before, d_before = snapshot(gan.generator.trainable_variables), snapshot(gan.discriminator.variables)
    gan.generator_step(real, None)
    assert not any(changed(d_before, gan.discriminator.variables))
    assert all(changed(g_before, gan.generator.trainable_variables))


@pytest.mark.parametrize("d_steps", [1, 3])
def test_k_discriminator_updates_per_generator_update(d_steps):
    gan = tiny_gan(d_steps=d_steps)
    gan.compile()
    batches = tf.data.Dataset.from_tensor_slices(images(96)).batch(12 * d_steps, drop_remainder=True)
    gan.fit(batches, epochs=1, verbose=0)
    generator_updates = len(batches)
    assert int(gan.step.numpy()) == generator_updates
    assert int(gan.g_optimizer.iterations.numpy()) == generator_updates
    assert int(gan.d_optimizer.iterations.numpy()) == d_steps * generator_updates


def test_label_flipping_rate_and_smoothing():
    gan = tiny_gan(label_flip=0.2, label_smoothing=0.1)
    targets = gan.real_targets(20000, 0).numpy()
    np.testing.assert_allclose(np.unique(targets), [0.0, 0.9], rtol=1e-6)
    assert np.mean(targets == 0.0) == pytest.approx(0.2, abs=0.015)
    assert not np.array_equal(targets, gan.real_targets(20000, 1).numpy())  # fresh per draw


def test_epoch_metrics_are_means_of_step_values_not_double_averaged():
    batches = [images(16, seed=i) for i in range(4)]
    fitted = tiny_gan()
    fitted.compile()
    history = fitted.fit(tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(16), verbose=0)
    stepped = tiny_gan()
    stepped.compile()
    per_step = [stepped.train_on_batch(b, return_dict=True) for b in batches]  # resets metrics each call
    for name in ganmodels.METRIC_NAMES:
        assert history.history[name][0] == pytest.approx(np.mean([s[name] for s in per_step]), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_steps_are_finite_with_float32_variables(policy):
    keras.config.set_dtype_policy(policy)
    gan = tiny_gan(gradient_penalty=1.0)
    gan.compile()
    history = gan.fit(tf.data.Dataset.from_tensor_slices(images(32)).batch(16), verbose=0)
    assert all(np.isfinite(history.history[name][0]) for name in ganmodels.METRIC_NAMES)
    assert all(v.dtype == "float32" for v in gan.generator.variables + gan.discriminator.variables)
    assert gan.generator(tf.zeros((2, LATENT))).dtype == "float32"
    assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    assert isinstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    assert int(ganmodels.inner_optimizer(gan.g_optimizer).iterations.numpy()) == 2


@pytest.mark.parametrize("jit_compile, steps_per_execution", [(True, 1), (False, 3)])
def test_xla_and_steps_per_execution(jit_compile, steps_per_execution):
    gan = tiny_gan()
    gan.compile(jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    history = gan.fit(tf.data.Dataset.from_tensor_slices(images(96)).batch(16), verbose=0)
    assert int(gan.step.numpy()) == 6
    assert np.isfinite(history.history["d_loss"][0])


def test_checkpoint_restores_weights_optimizer_state_ema_and_noise_exactly(tmp_path):
    data = tf.data.Dataset.from_tensor_slices(images(64)).batch(16)
    original = tiny_gan(ema_decay=0.9, label_flip=0.1)
    original.compile()
    original.fit(data, verbose=0)
    path = original.checkpoint().save(str(tmp_path / "ckpt"))

    restored = tiny_gan(seed=0, ema_decay=0.9, label_flip=0.1)
    restored.compile()
    restored.build_optimizers()
    restored.checkpoint().restore(path).assert_consumed()
    names = ("generator", "discriminator")
    for name in names:
        for a, b in zip(getattr(original, name).variables, getattr(restored, name).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for opt in ("d_optimizer", "g_optimizer"):
        for a, b in zip(getattr(original, opt).variables, getattr(restored, opt).variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(restored.step.numpy()) == 4
    # Both continue identically: same weights, same optimizer moments, same noise stream.
    batch = images(16, seed=9)
    assert original.train_on_batch(batch, return_dict=True) == restored.train_on_batch(batch, return_dict=True)
    for a, b in zip(original.ema_weights, restored.ema_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("step, decay", [(0, 0.1), (20, 21 / 30), (5000, 5001 / 5010), (20000, 0.999)])
def test_ema_decay_warms_up_as_min_of_decay_and_one_plus_t_over_ten_plus_t(step, decay):
    """After the update at step t: ema = d ema_before + (1 - d) weights_after, d = min(0.999, (1+t)/(10+t))."""
    gan = tiny_gan(ema_decay=0.999)
    gan.compile()
    gan.step.assign(step)
    for ema in gan.ema_weights:  # a distinct starting average, so a wrong d shows
        ema.assign(ema.value + 1.0)
    before = snapshot(gan.ema_weights)
    gan.train_on_batch(images(16))
    for ema, start, weight in zip(gan.ema_weights, before, gan.generator.trainable_weights):
        np.testing.assert_allclose(ema.numpy(), decay * start + (1 - decay) * weight.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_options_name_the_option():
    with pytest.raises(ValueError, match="d_steps"):
        tiny_gan(d_steps=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        tiny_gan(label_smoothing=0.8)
    with pytest.raises(ValueError, match="unknown model family 'vae'"):
        ganmodels.build_networks("vae", SHAPE)
    with pytest.raises(ValueError, match="no option 'depth'"):
        ganmodels.build_networks("dcgan", SHAPE, depth=3)
    with pytest.raises(ValueError, match="image size 30"):
        ganmodels.build_networks("dcgan", (30, 30, 1))


def test_only_the_networks_weights_are_trainable():
    """The step counter and the EMA copies are state, not parameters: whatever trains or counts
    ``gan.trainable_weights`` (a custom loop, ``summary()``) gets exactly G's and D's weights."""
    gan = tiny_gan(ema_decay=0.9)
    networks = gan.generator.trainable_weights + gan.discriminator.trainable_weights
    assert sorted(map(id, gan.trainable_weights)) == sorted(map(id, networks))


def test_fits_when_created_inside_a_distribution_strategy_scope():
    """Under a strategy Keras builds an unbuilt model by calling it on a data batch, which would
    feed images to the generator; the GAN, whose networks are built, declares itself built."""
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        gan = tiny_gan()
        gan.compile()
    gan.fit(tf.data.Dataset.from_tensor_slices(images(32)).batch(16), verbose=0)
    assert int(gan.step) == 2


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3), (64, 3), (128, 1)])
def test_dcgan_shapes(size, channels):
    generator, discriminator = ganmodels.build_networks("dcgan", (size, size, channels), latent_dim=16, width=8)
    fake = generator(tf.random.normal((2, 16)) * 1000.0)  # saturates a tanh output, far beyond 1 without it
    assert fake.shape == (2, size, size, channels)
    assert 0.9 < float(tf.reduce_max(tf.abs(fake))) <= 1.0
    assert discriminator(fake).shape == (2, 1)


def test_mlp_for_tabular_vectors_is_linear_output():
    generator, discriminator = ganmodels.build_networks("mlp", (5,), latent_dim=4, hidden=(16,))
    out = generator(tf.random.normal((3, 4)) * 100)
    assert out.shape == (3, 5) and float(tf.reduce_max(tf.abs(out))) > 1.0
    assert discriminator(out).shape == (3, 1)


def test_vanilla_gan_learns_a_gaussian():
    """1-D N(3, 0.5^2): after ~1,500 steps the generated mean and spread are within 0.2 / 0.15."""
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("mlp", (1,), latent_dim=4, hidden=(32, 32))
    gan = ganmodels.GAN(generator, discriminator, 4, seed=0)
    gan.compile(ganmodels.default_optimizer(1e-3), ganmodels.default_optimizer(1e-3), steps_per_execution=50)
    real = np.random.default_rng(0).normal(3.0, 0.5, (64 * 1500, 1)).astype("float32")
    gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(64), verbose=0)
    samples = gan.generator(tf.random.normal((5000, 4)), training=False).numpy()
    assert samples.mean() == pytest.approx(3.0, abs=0.2)
    assert samples.std() == pytest.approx(0.5, abs=0.15)




# ------------------------------------------------------------ exact updates


def sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def linear_gan(d_l2, g_l2, **options):
    """G: z (2) -> one linear unit; D: x (1) -> one linear logit; both with an L2 kernel penalty."""
    keras.utils.set_random_seed(3)
    z = keras.Input((2,))
    generator = keras.Model(z, keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(g_l2))(z))
    x = keras.Input((1,))
    discriminator = keras.Model(x, keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(d_l2))(x))
    gan = ganmodels.GAN(generator, discriminator, 2, **options)
    # no XLA: its random kernels draw other numbers than eager sample_latent from the same seed
    gan.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0), jit_compile=False)
    return gan


@pytest.mark.parametrize("reuse_fakes", [False, True])
def test_one_sgd_step_equals_the_analytic_update_with_penalties(reuse_fakes):
    """Non-saturating loss, SGD(1.0), L2 penalties 0.3 (D) and 0.2 (G), derivatives by hand.
    Alternating: G steps on fresh noise through the updated D; reuse_fakes: on D's fakes through
    the D before its update."""
    d_l2, g_l2, n = 0.3, 0.2, 8
    gan = linear_gan(d_l2, g_l2, reuse_fakes=reuse_fakes)
    real = np.random.default_rng(0).normal(2.0, 1.0, (n, 1)).astype("float32")
    (wg, bg), (wd, bd) = gan.generator.get_weights(), gan.discriminator.get_weights()
    z_d = gan.sample_latent(n, "d_latent", 0).numpy()
    z_g = gan.sample_latent(n, "g_latent").numpy()

    fake = z_d @ wg + bg
    real_logit, fake_logit = real @ wd + bd, fake @ wd + bd
    d_loss = np.mean(np.log1p(np.exp(-real_logit))) + np.mean(np.log1p(np.exp(fake_logit)))
    wd_new = wd - (np.mean(-sigmoid(-real_logit) * real + sigmoid(fake_logit) * fake) + 2 * d_l2 * wd)
    bd_new = bd - np.mean(-sigmoid(-real_logit) + sigmoid(fake_logit))
    z, (wd_g, bd_g) = (z_d, (wd, bd)) if reuse_fakes else (z_g, (wd_new, bd_new))
    g_logit = (z @ wg + bg) @ wd_g + bd_g
    g_loss = np.mean(np.log1p(np.exp(-g_logit)))
    upstream = -sigmoid(-g_logit) * wd_g[0, 0] / n  # d(mean loss)/d(fake_i)
    wg_new = wg - (z.T @ upstream + 2 * g_l2 * wg)
    bg_new = bg - upstream.sum(axis=0)

    logs = gan.train_on_batch(real, return_dict=True)
    for got, want in zip(gan.discriminator.get_weights() + gan.generator.get_weights(), [wd_new, bd_new, wg_new, bg_new]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert logs["d_loss"] == pytest.approx(d_loss, rel=1e-5)  # the losses as logged carry no penalties
    assert logs["g_loss"] == pytest.approx(g_loss, rel=1e-5)


def test_label_smoothing_and_flips_change_only_the_real_targets_of_ds_update():
    """D's SGD(1.0) step by hand with smoothing 0.1 and flips 0.3: the real targets are
    0.9 or 0 (flipped), the fakes' target stays 0 (their term is softplus(fake logit))."""
    n, smoothing, flip = 64, 0.1, 0.3
    gan = linear_gan(0.0, 0.0, label_smoothing=smoothing, label_flip=flip)
    real = np.random.default_rng(1).normal(2.0, 1.0, (n, 1)).astype("float32")
    (wg, bg), (wd, bd) = gan.generator.get_weights(), gan.discriminator.get_weights()
    fake = gan.sample_latent(n, "d_latent", 0).numpy() @ wg + bg
    draws = tf.random.stateless_uniform((n,), seed=gan.noise_seed("label_flip", 0)).numpy()
    targets = np.where(draws >= flip, 1.0 - smoothing, 0.0)[:, None]
    assert 0 < np.sum(targets == 0.0) < n  # both kinds of real target occur
    real_logit, fake_logit = real @ wd + bd, fake @ wd + bd
    d_real, d_fake = sigmoid(real_logit) - targets, sigmoid(fake_logit)  # d loss / d logit, per sample
    wd_new = wd - np.mean(d_real * real + d_fake * fake)
    bd_new = bd - np.mean(d_real + d_fake)
    gan.discriminator_step(tf.constant(real), None, 0)
    for got, want in zip(gan.discriminator.get_weights(), [wd_new, bd_new]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def first_update_norms(policy):
    """|update| of D's and G's weights after one SGD step from the same start under ``policy``."""
    keras.config.set_dtype_policy(policy)
    gan = tiny_gan()
    gan.compile(keras.optimizers.SGD(0.01), keras.optimizers.SGD(0.01))
    d_before, g_before = snapshot(gan.discriminator.trainable_variables), snapshot(gan.generator.trainable_variables)
    gan.train_on_batch(images(16))
    norm = lambda before, variables: np.sqrt(sum(np.sum((v.numpy() - b) ** 2) for b, v in zip(before, variables)))  # noqa: E731
    return norm(d_before, gan.discriminator.trainable_variables), norm(g_before, gan.generator.trainable_variables)


def test_mixed_float16_updates_both_networks_as_much_as_float32():
    """Each loss is scaled before its float16 backward pass and unscaled by the optimizer: the
    first SGD updates match float32's size (a loss left unscaled is divided by 2^15 there)."""
    d32, g32 = first_update_norms("float32")
    d16, g16 = first_update_norms("mixed_float16")
    assert d16 == pytest.approx(d32, rel=0.05) and g16 == pytest.approx(g32, rel=0.05)


class StepRecording(ganmodels.GAN):
    """Keeps each D step's d_loss (run eagerly)."""

    def discriminator_step(self, real, condition, index):
        stats = super().discriminator_step(real, condition, index)
        self.d_losses.append(float(stats["d_loss"]))
        return stats


def test_logged_d_metrics_are_means_over_the_d_steps():
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("mlp", (2,), latent_dim=2, hidden=(4,))
    gan = StepRecording(generator, discriminator, 2, d_steps=3)
    gan.d_losses = []
    gan.compile(run_eagerly=True, jit_compile=False)
    logs = gan.train_on_batch(np.random.default_rng(0).normal(size=(12, 2)).astype("float32"), return_dict=True)
    assert len(gan.d_losses) == 3 and len(set(gan.d_losses)) == 3
    assert logs["d_loss"] == pytest.approx(np.mean(gan.d_losses), rel=1e-6)


def packed_mlp(**options):
    keras.utils.set_random_seed(0)
    return ganmodels.build_gan("mlp", (2,), latent_dim=2, packing=2, hidden=(4,), **options)


@pytest.mark.parametrize("options, rows", [({"reuse_fakes": True}, 5), ({"d_steps": 2}, 2), ({}, 3)])
def test_packs_that_would_mix_real_and_fake_are_an_error_naming_the_fix(options, rows):
    """5 rows with reuse_fakes (the single backward pass would read a mixed pack), 2 rows for
    2 D steps (one-row slices: every pack one real and one fake), 3 rows in one D step."""
    gan = packed_mlp(**options)
    gan.compile()
    batch = np.zeros((rows, 2), "float32")
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match=r"packing=2: a D step got .* real samples, "
                       r"not a multiple of 2, so a pack would mix real and fake; "
                       r"make the batch per D step \(train.batch_size\) a multiple of 2"):
        gan.train_on_batch(batch)
    with pytest.raises(ValueError, match="a D step got 3 real samples"):  # static shapes name the count
        gan.discriminate_pair(tf.zeros((3, 2)), tf.zeros((3, 2)), None, 0)


def test_whole_packs_train():
    gan = packed_mlp(d_steps=2, reuse_fakes=True)
    gan.compile()
    logs = gan.train_on_batch(np.random.default_rng(0).normal(size=(8, 2)).astype("float32"), return_dict=True)
    assert np.isfinite(logs["d_loss"]) and int(gan.step.numpy()) == 1


class Recording(ganmodels.GAN):
    """Records what each D call of the game sees, by stream (run eagerly)."""

    def discriminator_input(self, samples, condition, stream):
        self.seen.append((stream, samples.numpy()))
        return samples, condition


def recording_gan(d_steps):
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("mlp", (2,), latent_dim=2, hidden=(4,))
    gan = Recording(generator, discriminator, 2, d_steps=d_steps)
    gan.seen = []
    gan.compile(run_eagerly=True)
    return gan


def real_slices(gan):
    return [(stream, samples) for stream, samples in gan.seen if stream.startswith("d_real")]


def test_each_discriminator_step_trains_on_its_own_slice():
    gan = recording_gan(d_steps=3)
    batch = np.arange(26, dtype="float32").reshape(13, 2)  # 13 rows: slices of 4, the last row unused
    gan.train_on_batch(batch)
    assert [stream for stream, _ in real_slices(gan)] == ["d_real/0", "d_real/1", "d_real/2"]
    for k, (_, samples) in enumerate(real_slices(gan)):
        np.testing.assert_array_equal(samples, batch[4 * k:4 * k + 4])
    fakes = [samples for stream, samples in gan.seen if stream.startswith("d_fake")]
    assert len(fakes) == 3 and not np.array_equal(fakes[0], fakes[1])  # fresh noise per D step
    assert [stream for stream, _ in gan.seen][-1] == "g_fake"


def test_a_batch_smaller_than_d_steps_gives_one_row_slices_in_turn():
    gan = recording_gan(d_steps=3)
    batch = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    gan.train_on_batch(batch)
    assert [samples.tolist() for _, samples in real_slices(gan)] == [[[1.0, 2.0]], [[3.0, 4.0]], [[1.0, 2.0]]]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_last_batch_smaller_than_d_steps_never_turns_weights_nan(jit_compile):
    """The README's fit(x.batch(64)) ends on a partial batch; here 2 rows for 3 D steps."""
    gan = tiny_gan(d_steps=3)
    gan.compile(jit_compile=jit_compile)
    history = gan.fit(tf.data.Dataset.from_tensor_slices(images(14)).batch(6), verbose=0)  # 6, 6, 2 rows
    assert int(gan.step) == 3 and np.isfinite(history.history["d_loss"][0])
    assert all(np.isfinite(w).all() for w in gan.generator.get_weights() + gan.discriminator.get_weights())


def slices_traced_with_unknown_batch(gan, batch):
    """The D slices as fit() computes them when the dataset's batch size is unknown when tracing
    (``batch()`` without ``drop_remainder``): the batch dimension is a tensor."""
    @tf.function(input_signature=[tf.TensorSpec((None, batch.shape[1]), tf.float32)])
    def slices(real):
        return [real_k for real_k, _ in gan.discriminator_slices(real, None)]

    return [s.numpy() for s in slices(tf.constant(batch))]


@pytest.mark.parametrize("rows, expected_rows", [(13, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]),
                                                 (2, [[0], [1], [0]])])
def test_slices_with_a_batch_size_known_only_at_run_time_are_those_of_a_static_batch(rows, expected_rows):
    gan = recording_gan(d_steps=3)
    batch = np.arange(2 * rows, dtype="float32").reshape(rows, 2)
    got = slices_traced_with_unknown_batch(gan, batch)
    assert [s.tolist() for s in got] == [batch[r].tolist() for r in expected_rows]
    static = [real_k.numpy().tolist() for real_k, _ in gan.discriminator_slices(tf.constant(batch), None)]
    assert static == [s.tolist() for s in got]


def bn_discriminator(shape):
    x = keras.Input(shape)
    h = keras.layers.Dense(16)(keras.layers.Flatten()(x))
    h = keras.layers.LeakyReLU(0.2)(keras.layers.BatchNormalization()(h))
    return keras.Model(x, keras.layers.Dense(1, dtype="float32")(h))


def sn_bn_discriminator(shape):
    x = keras.Input(shape)
    h = keras.layers.SpectralNormalization(keras.layers.Conv2D(4, 3, strides=2, padding="same"))(x)
    h = keras.layers.LeakyReLU(0.2)(keras.layers.BatchNormalization()(h))
    return keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(h)))


def test_frozen_discriminator_keeps_weights_bn_statistics_and_spectral_norm_state():
    """Rule: in G's step nothing of D changes, neither its weights nor BatchNorm's moving
    statistics nor spectral norm's u vector and normalised kernel; D still runs in training mode
    (batch statistics, one power iteration), the function D's own step trains."""
    keras.utils.set_random_seed(0)
    generator, _ = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8)
    gan = ganmodels.GAN(generator, sn_bn_discriminator(SHAPE), LATENT)
    gan.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
    real = tf.constant(images(16))
    d_state = snapshot(gan.discriminator.variables)
    gan.discriminator_step(real, None, 0)
    assert all(changed(d_state, gan.discriminator.variables))  # D's step moves weights, statistics and u

    d_state, g_state = snapshot(gan.discriminator.variables), snapshot(gan.generator.variables)
    z = gan.sample_latent(16, "g_latent")
    with tf.GradientTape() as tape:  # the reference: G's loss through D in training mode
        logits = gan.discriminator(gan.generator(z, training=True), training=True)
        loss = tf.reduce_mean(tf.math.softplus(-logits))
    grads = tape.gradient(loss, gan.generator.trainable_variables)
    expected = [v.numpy() - 0.1 * g.numpy() for v, g in zip(gan.generator.trainable_variables, grads)]
    for variable, value in zip(gan.discriminator.variables + gan.generator.variables, d_state + g_state):
        variable.assign(value)

    gan.generator_step(real, None)
    assert not any(changed(d_state, gan.discriminator.variables))
    for got, want in zip(gan.generator.trainable_variables, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_frozen_discriminator_and_the_single_pass_rule_see_layers_inside_nested_models():
    """A D built around another model (as ``packed_discriminator`` wraps the per-pack D): the
    BatchNorm and spectral norm inside stay frozen in G's step, and reuse_fakes' rule sees the
    BatchNorm (so it takes the second pass)."""
    keras.utils.set_random_seed(0)
    generator, _ = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8)
    x = keras.Input(SHAPE)
    wrapper = keras.Model(x, sn_bn_discriminator(SHAPE)(x))
    gan = ganmodels.GAN(generator, wrapper, LATENT, reuse_fakes=True)
    assert not gan.single_backward_is_exact()
    gan.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
    d_state = snapshot(wrapper.variables)
    gan.generator_step(tf.constant(images(16)), None)
    assert not any(changed(d_state, wrapper.variables))


# ----------------------------------------------- reuse_fakes against two-pass gradients


def softplus(t):
    return tf.math.softplus(t)


G_LOSSES = {"non_saturating": lambda l: softplus(-l), "hinge": lambda l: -l, "least_squares": lambda l: 0.5 * (l - 1) ** 2}
D_LOSSES = {"non_saturating": lambda r, f: softplus(-r) + softplus(f),
            "hinge": lambda r, f: tf.nn.relu(1 - r) + tf.nn.relu(1 + f),
            "least_squares": lambda r, f: 0.5 * (r - 1) ** 2 + 0.5 * f**2}


def two_pass_update(gan, real, condition, z, loss, content=None, adversarial_weight=1.0):
    """SGD(1.0) weights after one simultaneous step, each network's gradient from its own
    backward pass of its own loss on one shared forward pass (state restored afterwards)."""
    saved = [snapshot(gan.generator.variables), snapshot(gan.discriminator.variables)]
    with tf.GradientTape(persistent=True) as tape:
        fake = gan.generate(z, condition, training=True)
        both_condition = None if condition is None else tf.concat([condition, condition], 0)
        logits = gan.discriminate(tf.concat([real, fake], 0), both_condition, training=True)
        real_logits, fake_logits = tf.split(tf.reshape(logits, (-1,)), 2)
        d_loss = tf.reduce_mean(D_LOSSES[loss](real_logits, fake_logits))
        g_loss = adversarial_weight * tf.reduce_mean(G_LOSSES[loss](fake_logits))
        if content is not None:
            g_loss += tf.reduce_mean(content(real, fake))
    updates = []
    for network, objective in ((gan.generator, g_loss), (gan.discriminator, d_loss)):
        grads = tape.gradient(objective, network.trainable_variables)
        updates.append([v.numpy() - tf.convert_to_tensor(g).numpy() for v, g in zip(network.trainable_variables, grads)])
    for network, values in zip((gan.generator, gan.discriminator), saved):
        for variable, value in zip(network.variables, values):
            variable.assign(value)
    return updates, fake_logits.numpy()


def assert_joint_step_matches(gan, real, condition, loss, **reference):
    gan.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0))
    z = gan.sample_latent(len(real), "d_latent", 0)
    (g_want, d_want), fake_logits = two_pass_update(gan, real, condition, z, loss, **reference)
    g_before, d_before = snapshot(gan.generator.trainable_variables), snapshot(gan.discriminator.trainable_variables)
    gan.joint_step(real, condition, 0)
    for network, before, want in ((gan.generator, g_before, g_want), (gan.discriminator, d_before, d_want)):
        for variable, start, target in zip(network.trainable_variables, before, want):
            step, expected = variable.numpy() - start, target - start
            np.testing.assert_allclose(step, expected, rtol=1e-3, atol=1e-5 * max(np.abs(expected).max(), 1e-3))
    return fake_logits


def trained(gan, data, steps=40, d_lr=5e-3, g_lr=1e-4):
    """Weights after some training, D ahead of G."""
    gan.compile(keras.optimizers.Adam(d_lr, 0.5), keras.optimizers.Adam(g_lr, 0.5))
    gan.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return gan


def blobs(n=512):
    return np.random.default_rng(0).normal(1.5, 0.3, (n, 2)).astype("float32")


def mlp_gan(discriminator=None, **options):
    keras.utils.set_random_seed(0)
    generator, plain_d = ganmodels.build_networks("mlp", (2,), latent_dim=4, hidden=(16,))
    return ganmodels.GAN(generator, discriminator or plain_d, 4, reuse_fakes=True, **options)


@pytest.mark.parametrize("loss, batch_norm", [("non_saturating", False), ("non_saturating", True),
                                              ("hinge", False), ("least_squares", False)])
def test_reuse_fakes_equals_two_pass_gradients_at_trained_weights(loss, batch_norm):
    gan = mlp_gan(bn_discriminator((2,)) if batch_norm else None, loss=loss)
    assert gan.single_backward_is_exact() == (loss == "non_saturating" and not batch_norm)
    trained(gan, tf.data.Dataset.from_tensor_slices(blobs()).repeat().batch(32))
    fake_logits = assert_joint_step_matches(gan, tf.constant(blobs(32)), None, loss)
    if loss == "hinge":  # D is winning: fakes beyond the margin, where D's hinge has no slope
        assert np.mean(fake_logits < -1.0) > 0.2, fake_logits


def test_reuse_fakes_stays_exact_when_d_rejects_fakes_beyond_float32_range():
    """A fake logit of -100: D's slope sigmoid(-100) underflows, G's is ~1; the step falls back
    to the second backward pass instead of losing G's gradient."""
    gan = mlp_gan()
    bias = gan.discriminator.layers[-1].bias
    bias.assign(bias - 100.0)
    fake_logits = assert_joint_step_matches(gan, tf.constant(blobs(32)), None, "non_saturating")
    assert fake_logits.max() < -90


def test_reuse_fakes_equals_two_pass_for_conditional_gan():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 256).astype("int32")
    points = (blobs(256) + labels[:, None]).astype("float32")
    gan = ganmodels.build_gan("cgan", (2,), latent_dim=4, num_classes=3, hidden=(16,), reuse_fakes=True)
    assert gan.single_backward_is_exact()
    trained(gan, tf.data.Dataset.from_tensor_slices((points, labels)).repeat().batch(32))
    assert_joint_step_matches(gan, tf.constant(points[:32]), tf.constant(labels[:32]), "non_saturating")


@pytest.mark.parametrize("pretraining", [False, True])
def test_reuse_fakes_equals_two_pass_for_srgan_with_its_own_generator_loss(pretraining):
    """SRGAN's D has BatchNorm; G's loss is the content loss + 1e-3 x adversarial (0 while pretraining)."""
    keras.utils.set_random_seed(0)
    high = np.random.default_rng(0).uniform(-1, 1, (64, 8, 8, 1)).astype("float32")
    low = tf.image.resize(high, (4, 4), "area").numpy()
    gan = ganmodels.build_gan("srgan", (8, 8, 1), lowres_shape=(4, 4, 1), residual_blocks=1, filters=4, width=4,
                              stages=1, dense_units=8, reuse_fakes=True, pretrain_steps=1000 if pretraining else 0)
    assert not gan.single_backward_is_exact()
    trained(gan, tf.data.Dataset.from_tensor_slices((low, high)).repeat().batch(8), steps=10)

    def content(real, fake):
        mse = tf.reduce_mean(tf.reshape((real - fake) ** 2, (len(high[:8]), -1)), axis=1)
        return tf.math.log(mse + 1e-6)

    assert_joint_step_matches(gan, tf.constant(high[:8]), tf.constant(low[:8]), "non_saturating", content=content,
                              adversarial_weight=0.0 if pretraining else 1e-3)


def test_reuse_fakes_while_srgan_pretrains_stays_finite_when_d_rejects_fakes_beyond_float32_range():
    """Pretraining makes G's adversarial slope b_i exactly 0, and a D without BatchNorm (single
    pass allowed) at fake logits near -200 has slope a_i = 0 in float32: b/a = 0/0 must not reach
    G's update (the second pass is taken); G learns from the content loss alone."""
    from ganpipe.ganmodels.srgan import SRGAN

    keras.utils.set_random_seed(0)
    high = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 1)).astype("float32")
    low = tf.image.resize(high, (4, 4), "area").numpy()
    generator, _ = ganmodels.build_networks("srgan", (8, 8, 1), scale=2, residual_blocks=1, filters=4, width=4,
                                            stages=1, dense_units=8)
    x = keras.Input((8, 8, 1))
    discriminator = keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    gan = SRGAN(generator, discriminator, pretrain_steps=1000, reuse_fakes=True)
    assert gan.single_backward_is_exact()
    bias = discriminator.layers[-1].bias
    bias.assign(bias - 200.0)

    def content(real, fake):
        mse = tf.reduce_mean(tf.reshape((real - fake) ** 2, (len(high), -1)), axis=1)
        return tf.math.log(mse + 1e-6)

    fake_logits = assert_joint_step_matches(gan, tf.constant(high), tf.constant(low), "non_saturating",
                                            content=content, adversarial_weight=0.0)
    assert fake_logits.max() < -150


# ------------------------------------------------------------ options vs loss, metrics, EMA


def test_options_the_loss_would_ignore_are_errors_naming_both():
    for loss in ("hinge", "wasserstein"):
        with pytest.raises(ValueError, match=f"label_smoothing=0.1 has no effect with loss='{loss}'"):
            tiny_gan(loss=loss, label_smoothing=0.1)
        with pytest.raises(ValueError, match=f"label_flip=0.05 has no effect with loss='{loss}'"):
            tiny_gan(loss=loss, label_flip=0.05)
    assert tiny_gan(loss="least_squares", label_smoothing=0.1).real_targets(4, 0).numpy() == pytest.approx([0.9] * 4)


def test_wasserstein_defaults_to_the_gradient_penalty_and_refuses_an_unconstrained_critic():
    wgan = tiny_gan(loss="wasserstein")
    assert (wgan.gradient_penalty, wgan.d_steps) == (10.0, 5)
    with pytest.raises(ValueError, match="loss='wasserstein' needs a Lipschitz critic.*gradient_penalty=0"):
        tiny_gan(loss="wasserstein", gradient_penalty=0.0)
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8, spectral_norm=True)
    assert ganmodels.GAN(generator, discriminator, LATENT, loss="wasserstein", gradient_penalty=0.0).gradient_penalty == 0.0
    assert tiny_gan(loss="hinge").gradient_penalty == 0.0


def test_training_metrics_follow_the_loss_into_tensorboard(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from ganpipe.components import monitoring

    gan = tiny_gan(loss="hinge")
    gan.compile()
    writer = tf.summary.create_file_writer(str(tmp_path))
    monitor = monitoring.TensorBoardMonitor(writer, total_steps=2, log_every=1, sample_every=100, images_per_step=16,
                                            probe=monitoring.NoiseProbe(gan, images(8)))
    gan.fit(tf.data.Dataset.from_tensor_slices(images(32)).batch(16), callbacks=[monitor], verbose=0)
    writer.close()
    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    tags = {tag.removeprefix(f"{monitoring.GAME}/") for tag in events.Tags()["tensors"]}
    assert {"d_loss", "g_loss", "d_accuracy", "real_inside_margin", "fake_inside_margin"} <= tags
    assert not tags & {"d_real", "d_fake", "value", "js", "js_lower_bound"}


def test_ema_generator_at_2000_steps_is_nearer_the_trained_weights_than_the_initial_ones(tmp_path):
    """Without warm-up a 0.999 average still holds 0.999^2000 = 13.5% of the random initialisation."""
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("mlp", (1,), latent_dim=2, hidden=(8,))
    gan = ganmodels.GAN(generator, discriminator, 2, ema_decay=0.999)
    initial = snapshot(gan.generator.trainable_weights)
    gan.compile(ganmodels.default_optimizer(1e-3), ganmodels.default_optimizer(1e-3), steps_per_execution=100)
    real = np.random.default_rng(0).normal(3.0, 0.5, (32 * 2000, 1)).astype("float32")
    gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(32), verbose=0)
    assert int(gan.step) == 2000
    gan.ema_generator().save(tmp_path / "ema.keras")
    exported = keras.models.load_model(tmp_path / "ema.keras").trainable_weights

    def distance(a, b):
        return np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2) for x, y in zip(a, b)))

    final = snapshot(gan.generator.trainable_weights)
    assert distance(exported, final) < 0.1 * distance(exported, initial), (distance(exported, final),
                                                                            distance(exported, initial))


def test_ema_generator_recomputes_batchnorm_statistics_for_its_own_weights():
    gan = tiny_gan(ema_decay=0.5)
    gan.compile()
    gan.fit(tf.data.Dataset.from_tensor_slices(images(64)).batch(16), verbose=0)
    z = tf.random.normal((256, LATENT), seed=1)
    ema = gan.ema_generator(z)
    # statistics of this very batch: inference mode (moving statistics) = training mode (batch statistics)
    np.testing.assert_allclose(ema(z, training=False), ema(z, training=True), atol=1e-4)
    norm = [layer for layer in ema.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    raw = gan.generator.get_layer(norm.name)
    assert not np.allclose(norm.moving_mean.numpy(), raw.moving_mean.numpy())
    assert norm.momentum == raw.momentum  # restored after the pass


def test_ema_generator_carries_the_averaged_weights_not_the_last_ones():
    gan = tiny_gan(ema_decay=0.5)
    gan.compile()
    gan.fit(tf.data.Dataset.from_tensor_slices(images(32)).batch(16), verbose=0)
    ema = gan.ema_generator(tf.random.normal((64, LATENT), seed=1))
    averaged, last = snapshot(gan.ema_weights), snapshot(gan.generator.trainable_weights)
    assert not all(np.array_equal(a, b) for a, b in zip(averaged, last))
    for got, want in zip(ema.trainable_weights, averaged):
        np.testing.assert_array_equal(got.numpy(), want)


def test_ema_generator_with_decay_zero_is_the_generator_non_trainable_state_included():
    """Decay 0 keeps the last weights: the EMA generator then makes exactly G's samples, here with
    an adapted Normalization that maps G's output back to data units (non-trainable state)."""
    keras.utils.set_random_seed(0)
    z = keras.Input((2,))
    to_data_units = keras.layers.Normalization(invert=True)
    to_data_units.adapt(np.random.default_rng(0).normal(100.0, 5.0, (256, 1)).astype("float32"))
    generator = keras.Model(z, to_data_units(keras.layers.Dense(1)(z)))
    _, discriminator = ganmodels.build_networks("mlp", (1,), latent_dim=2, hidden=(8,))
    gan = ganmodels.GAN(generator, discriminator, 2, ema_decay=0.0)
    gan.compile()
    gan.train_on_batch(np.random.default_rng(1).normal(100.0, 5.0, (16, 1)).astype("float32"))
    inputs = gan.generator_inputs(8)
    np.testing.assert_allclose(gan.ema_generator()(inputs), generator(inputs), rtol=1e-6)


def test_discriminator_trains_on_the_fakes_the_generator_makes_in_training_mode():
    """D learns to reject what G makes as it is being trained (BatchNorm on batch statistics, as in
    G's own step), not G's inference-mode output with its still-initial moving statistics."""
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in generator.layers)
    gan = Recording(generator, discriminator, LATENT)
    gan.seen = []
    gan.compile(run_eagerly=True)
    expected = generator(gan.sample_latent(16, "d_latent", 0), training=True).numpy()
    gan.train_on_batch(images(16))
    np.testing.assert_allclose(dict(gan.seen)["d_fake/0"], expected, atol=1e-5)


def test_lazy_r1_falls_on_every_interval_th_discriminator_update_counted_across_steps():
    """d_steps 3, interval 4: D updates 0, 4, 8, 12 are step 0's first, step 1's second, step 2's
    third and step 4's first D step."""
    gan = linear_gan(0.0, 0.0, r1=0.4, r1_interval=4, d_steps=3)
    real, fake = np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")
    penalised = set()
    for step in range(5):
        gan.step.assign(step)
        penalised |= {(step, k) for k in range(3) if float(gan.discriminator_penalty(real, fake, None, k)) != 0.0}
    assert penalised == {(0, 0), (1, 1), (2, 2), (4, 0)}


# ------------------------------------------------------------ WGAN-GP


def quadratic_critic_gan(shape):
    """Critic D(x) = ||x||^2 / 2, so grad_x D(x) = x: the penalty shows where it was taken."""
    x = keras.Input(shape)
    half_square = keras.layers.Lambda(lambda t: 0.5 * ops_sum_per_sample(t * t))
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(int(np.prod(shape))),
                                  keras.layers.Reshape(shape)])
    return ganmodels.GAN(generator, keras.Model(x, half_square(x)), 2, loss="wasserstein")


def ops_sum_per_sample(t):
    return keras.ops.sum(keras.ops.reshape(t, (keras.ops.shape(t)[0], -1)), axis=1, keepdims=True)


def test_gradient_penalty_is_taken_at_points_uniform_on_the_segments_between_real_and_fake():
    gan = quadratic_critic_gan((1,))
    real, fake = tf.constant([[2.0]]), tf.constant([[4.0]])
    # (|x_hat| - 1)^2 with x_hat in [2, 4]: x_hat = 1 + sqrt(penalty), one fresh point per draw
    points = np.array([1.0 + np.sqrt(float(gan.gradient_penalty_value(real, fake, None, i))) for i in range(300)])
    assert points.min() >= 2.0 - 1e-5 and points.max() <= 4.0 + 1e-5
    assert points.mean() == pytest.approx(3.0, abs=0.1) and points.std() == pytest.approx(2 / np.sqrt(12), abs=0.08)

    images = np.random.default_rng(0).uniform(-1, 1, (3, 4, 4, 1)).astype("float32")
    gan = quadratic_critic_gan((4, 4, 1))
    same = tf.constant(images)  # real = fake: every point of the segment is the sample itself
    norms = np.linalg.norm(images.reshape(3, -1), axis=1)
    assert float(gan.gradient_penalty_value(same, same, None)) == pytest.approx(np.mean((norms - 1.0) ** 2), rel=1e-5)


@pytest.mark.parametrize("critic_weight", [0.3, 0.0])
def test_one_sgd_step_of_wgan_gp_equals_the_analytic_update(critic_weight):
    """Linear critic D(x) = w x + b: grad_x D = w everywhere, penalty lambda (|w| - 1)^2 with
    gradient 2 lambda (|w| - 1) sign(w), which is 0 (not NaN) at w = 0, where D is flat."""
    penalty, n = 10.0, 8
    gan = linear_gan(0.0, 0.0, loss="wasserstein", d_steps=1, gradient_penalty=penalty)
    gan.discriminator.set_weights([np.array([[critic_weight]], "float32"), np.array([0.5], "float32")])
    real = np.random.default_rng(0).normal(2.0, 1.0, (n, 1)).astype("float32")
    (wg, bg), (wd, bd) = gan.generator.get_weights(), gan.discriminator.get_weights()
    z_d, z_g = gan.sample_latent(n, "d_latent", 0).numpy(), gan.sample_latent(n, "g_latent").numpy()
    fake = z_d @ wg + bg
    wd_new = wd - (np.mean(fake) - np.mean(real) + penalty * 2 * (np.abs(wd) - 1) * np.sign(wd))
    wg_new, bg_new = wg + wd_new[0, 0] * z_g.mean(axis=0)[:, None], bg + wd_new[0, 0]  # G: -mean(w G(z) + b)

    logs = gan.train_on_batch(real, return_dict=True)
    for got, want in zip(gan.discriminator.get_weights() + gan.generator.get_weights(), [wd_new, bd, wg_new, bg_new]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert logs["d_loss"] == pytest.approx(wd[0, 0] * (np.mean(fake) - np.mean(real)), rel=1e-5, abs=1e-6)


def smooth_mlp_gan(**options):
    """A D with a curved (tanh) hidden layer: its gradient at x changes with x, so a penalty on
    fakes has a gradient at the fakes (it would have none through piecewise-linear ReLUs)."""
    keras.utils.set_random_seed(0)
    generator, _ = ganmodels.build_networks("mlp", (2,), latent_dim=4, hidden=(16,))
    x = keras.Input((2,))
    discriminator = keras.Model(x, keras.layers.Dense(1)(keras.layers.Dense(16, activation="tanh")(x)))
    return ganmodels.GAN(generator, discriminator, 4, reuse_fakes=True, **options)


def test_reuse_fakes_keeps_the_gradient_penalty_at_the_fakes_out_of_the_generators_update():
    """The penalty at interpolates depends on the fakes, so D's gradient at them is not only its
    loss's: G's update must still be J^T b alone (weight 1, the smallest the rule must catch)."""
    gan = smooth_mlp_gan(gradient_penalty=1.0)
    gan.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0))
    real = tf.constant(blobs(32))
    (g_want, _), _ = two_pass_update(gan, real, None, gan.sample_latent(32, "d_latent", 0), "non_saturating")
    g_before = snapshot(gan.generator.trainable_variables)
    gan.joint_step(real, None, 0)
    for variable, start, target in zip(gan.generator.trainable_variables, g_before, g_want):
        np.testing.assert_allclose(variable.numpy() - start, target - start, rtol=1e-3, atol=1e-6)


def test_reuse_fakes_under_mixed_float16_gives_g_its_gradient_when_d_rejects_the_fakes():
    """Under mixed_float16 D's backward pass runs in float16. For a confident D (fake logits near
    -25) D's slope a_i ~ 1e-12 is, even loss-scaled by 2^15, below float16's subnormals inside D,
    so G's gradient cannot be read off D's backward pass (the single pass is float32-only): G's
    update still equals the two-pass one."""
    keras.config.set_dtype_policy("mixed_float16")
    gan = mlp_gan()
    bias = gan.discriminator.layers[-1].bias
    bias.assign(bias - 25.0)
    gan.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0))
    real = tf.constant(blobs(32))
    (g_want, _), fake_logits = two_pass_update(gan, real, None, gan.sample_latent(32, "d_latent", 0), "non_saturating")
    assert fake_logits.max() < -20
    g_before = snapshot(gan.generator.trainable_variables)
    gan.joint_step(real, None, 0)
    for variable, start, target in zip(gan.generator.trainable_variables, g_before, g_want):
        np.testing.assert_allclose(variable.numpy() - start, target - start, rtol=2e-2, atol=1e-4 * np.abs(target - start).max())


# ------------------------------------------------------------ replicas

TWO_REPLICA_STEPS = textwrap.dedent("""
    import json
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ganpipe import ganmodels

    weights = {}
    for replicas in (1, 2):
        with tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)]).scope():
            keras.utils.set_random_seed(3)
            z = keras.Input((2,))  # G(z) = 0.5 whatever the noise, which differs per replica
            constant = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(0.5))
            generator = keras.Model(z, constant(z))
            x = keras.Input((1,))
            gan = ganmodels.GAN(generator, keras.Model(x, keras.layers.Dense(1)(x)), 2)
            gan.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0), jit_compile=False)
            initial = [w.tolist() for w in gan.discriminator.get_weights()]
        real = np.linspace(-1.0, 3.0, 16, dtype="float32")[:, None]
        gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(16), verbose=0)
        weights[replicas] = [w.tolist() for w in gan.discriminator.get_weights()] + [gan.generator.get_weights()[1].tolist()]
    print("REPORT" + json.dumps({"initial": initial, "weights": weights}))
""")


@pytest.mark.slow
def test_one_global_batch_on_two_replicas_gives_the_one_replica_sgd_update():
    """Losses are per-replica means divided by the replica count, because the optimizer sums the
    replicas' gradients: with SGD (no Adam normalisation to hide a wrong scale) the update of D and
    of G's bias from one global batch of 16 is the same on one replica and on two of 8 rows."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": repo}
    result = subprocess.run([sys.executable, "-c", TWO_REPLICA_STEPS], env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    one, two = report["weights"]["1"], report["weights"]["2"]
    assert one[:2] != report["initial"]
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
