"""The GAN core: which weights each step moves, k:1 steps, label flips, precisions, checkpoints,
metrics, and a learning test on a 1-D Gaussian."""
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


def test_reuse_fakes_option_trains_both_networks_in_one_pass():
    gan = tiny_gan(reuse_fakes=True)
    gan.compile()
    history = gan.fit(tf.data.Dataset.from_tensor_slices(images(64)).batch(16), epochs=1, verbose=0)
    assert int(gan.d_optimizer.iterations.numpy()) == int(gan.g_optimizer.iterations.numpy()) == 4
    assert np.isfinite(history.history["g_loss"][0])


def test_penalties_join_only_their_own_network_loss():
    """A heavy L2 penalty on D changes D's update but not G's."""
    def gan_with_d_penalty(l2):
        keras.utils.set_random_seed(0)
        generator, _ = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8)
        keras.utils.set_random_seed(1)
        _, discriminator = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=8, l2=l2)
        gan = ganmodels.GAN(generator, discriminator, LATENT)
        gan.compile()
        return gan

    plain, penalised = gan_with_d_penalty(0.0), gan_with_d_penalty(10.0)
    assert penalised.discriminator.losses and not plain.discriminator.losses
    real = tf.constant(images(16))
    for gan in (plain, penalised):
        gan.generator_step(real, None)
    for a, b in zip(plain.generator.trainable_variables, penalised.generator.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    for gan in (plain, penalised):
        gan.discriminator_step(real, None, 0)
    deltas = [np.abs(a.numpy() - b.numpy()).max() for a, b in
              zip(plain.discriminator.trainable_variables, penalised.discriminator.trainable_variables)]
    assert max(deltas) > 1e-5


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


def test_metrics_relations():
    gan = tiny_gan()
    gan.compile()
    logs = gan.train_on_batch(images(32), return_dict=True)
    assert 0.0 <= logs["d_real"] <= 1.0 and 0.0 <= logs["d_fake"] <= 1.0 and 0.0 <= logs["d_accuracy"] <= 1.0
    assert logs["js_lower_bound"] == pytest.approx((logs["value"] + np.log(4.0)) / 2.0, rel=1e-5)


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


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3), (64, 3), (128, 1)])
def test_dcgan_shapes(size, channels):
    generator, discriminator = ganmodels.build_networks("dcgan", (size, size, channels), latent_dim=16, width=8)
    fake = generator(tf.random.normal((2, 16)))
    assert fake.shape == (2, size, size, channels)
    assert float(tf.reduce_max(tf.abs(fake))) <= 1.0
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


@pytest.mark.parametrize("loss", ["non_saturating", "minimax", "hinge", "least_squares"])
def test_single_backward_joint_step_equals_two_backward_passes(loss):
    """reuse_fakes derives G's gradient from D's backward pass; it must match differentiating G's loss."""
    real = tf.constant(images(16))
    fast, slow = tiny_gan(reuse_fakes=True, loss=loss), tiny_gan(reuse_fakes=True, loss=loss)
    slow.single_backward_is_exact = lambda: False
    for gan in (fast, slow):  # plain SGD: the update is the gradient itself (Adam's first step is its sign)
        gan.compile(keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0))
        gan.joint_step(real, None, 0)
    for a, b in zip(fast.generator.trainable_variables + fast.discriminator.trainable_variables,
                    slow.generator.trainable_variables + slow.discriminator.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    assert any(changed(snapshot(tiny_gan().generator.trainable_variables), fast.generator.trainable_variables))
