"""Model families (cgan, lapgan, srgan) and the extra losses: build, train, save/reload, learn."""
import numpy as np
import pytest
import keras
import tensorflow as tf
from sklearn.datasets import load_digits, load_sample_images

from ganpipe.ganmodels import metrics
from ganpipe.ganmodels.conditional import ConditionalGAN
from ganpipe.ganmodels.families import build_gan
from ganpipe.ganmodels.gan import GAN
from ganpipe.ganmodels.lapgan import LAPGAN, laplacian_pyramid, upsample
from ganpipe.ganmodels.srgan import SRGAN, bicubic_upscale

CENTRES = np.array([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]], "float32")


def fit(gan, dataset, steps, d_lr=1e-3, g_lr=1e-3):
    gan.compile(keras.optimizers.Adam(d_lr, 0.5), keras.optimizers.Adam(g_lr, 0.5))
    return gan.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0).history


def assert_same_after_reload(model, inputs, path):
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(inputs, training=False), model(inputs, training=False), rtol=1e-6, atol=1e-6)


def digits(size):
    images = load_digits().images[..., None].astype("float32") / 8.0 - 1.0  # 0..16 -> [-1, 1]
    if size != 8:
        images = tf.image.resize(images, (size, size), "bilinear").numpy()
    return images, load_digits().target


# ------------------------------------------------------------------ build_gan


def test_build_gan_picks_the_class_and_family_defaults():
    assert type(build_gan("mlp", (2,), latent_dim=4, hidden=(8,))) is GAN
    assert isinstance(build_gan("cgan", (2,), latent_dim=4, num_classes=3, hidden=(8,)), ConditionalGAN)
    wgan = build_gan("dcgan", (8, 8, 1), latent_dim=4, width=8, loss="wasserstein", d_steps=None)
    assert (wgan.d_steps, wgan.gradient_penalty) == (5, 10.0)
    with pytest.raises(ValueError, match="no option 'vgg_weights'"):
        build_gan("dcgan", (8, 8, 1), vgg_weights="x.h5")
    with pytest.raises(ValueError, match="needs lowres_shape"):
        build_gan("srgan", (32, 32, 3))
    with pytest.raises(ValueError, match="upscaled by a factor"):
        build_gan("srgan", (32, 32, 3), lowres_shape=(10, 10, 3))
    with pytest.raises(ValueError, match=">= 2 classes"):
        build_gan("cgan", (8, 8, 1), num_classes=0)
    with pytest.raises(ValueError, match="halved"):
        build_gan("lapgan", (16, 16, 1), levels=4)


def test_build_gan_penalises_each_network_on_its_own_from_the_same_initial_weights():
    def build(**penalties):
        keras.utils.set_random_seed(0)
        return build_gan("dcgan", (8, 8, 1), latent_dim=4, width=8, **penalties)

    plain, d_only, both = build(), build(d_l2=0.5), build(l1=0.1)
    assert d_only.discriminator.losses and not d_only.generator.losses
    assert both.discriminator.losses and both.generator.losses
    for network in ("generator", "discriminator"):
        for a, b in zip(getattr(plain, network).get_weights(), getattr(d_only, network).get_weights()):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not both"):
        build(l2=0.1, g_l2=0.2)


# ------------------------------------------------------------ conditional GAN


@pytest.fixture(scope="module")
def mixture_cgan():
    """A cGAN (projection D) trained on 4 labelled Gaussian blobs, one per class."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 4096)
    samples = (CENTRES[labels] + 0.3 * rng.normal(size=(4096, 2))).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((samples, labels)).shuffle(4096, seed=0).repeat().batch(128)
    gan = build_gan("cgan", (2,), latent_dim=8, num_classes=4, hidden=(64, 64))
    history = fit(gan, data, steps=300)
    return gan, history


def test_conditional_gan_generates_the_requested_class(mixture_cgan):
    gan, history = mixture_cgan
    requested = np.repeat(np.arange(4), 250)
    samples = gan.sample(requested, seed=1).numpy()
    nearest_centre = np.argmin(((samples[:, None] - CENTRES[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest_centre == requested) > 0.9  # chance is 0.25
    assert all(np.isfinite(history[name][-1]) for name in ("d_loss", "g_loss"))


def test_conditional_networks_reload_identically(mixture_cgan, tmp_path):
    gan, _ = mixture_cgan
    z, labels = np.random.default_rng(1).normal(size=(6, 8)).astype("float32"), np.array([0, 1, 2, 3, 1, 0])
    assert [t.name for t in gan.generator.inputs] == ["latent", "label"]
    assert_same_after_reload(gan.generator, [z, labels], tmp_path / "generator.keras")
    points = np.random.default_rng(2).normal(size=(6, 2)).astype("float32")
    assert_same_after_reload(gan.discriminator, [points, labels], tmp_path / "discriminator.keras")


@pytest.mark.parametrize("g_mode, d_mode", [("concat", "projection"), ("multiply", "concat")])
def test_conditional_image_gan_trains_and_reloads(g_mode, d_mode, tmp_path):
    images, labels = digits(8)
    data = tf.data.Dataset.from_tensor_slices((images[:256], labels[:256])).repeat().batch(32)
    gan = build_gan("cgan", (8, 8, 1), latent_dim=16, num_classes=10, width=16,
                    generator_conditioning=g_mode, discriminator_conditioning=d_mode)
    history = fit(gan, data, steps=3)
    assert np.isfinite(history["d_loss"][-1]) and np.isfinite(history["g_loss"][-1])
    grid = gan.sample(gan.grid_labels(2), seed=0)
    assert grid.shape == (20, 8, 8, 1) and float(tf.reduce_max(tf.abs(grid))) <= 1.0
    z = np.zeros((3, 16), "float32")
    assert_same_after_reload(gan.generator, [z, np.array([1, 5, 9])], tmp_path / "generator.keras")
    with pytest.raises(ValueError, match="with_labels=True"):
        gan.train_step(tf.constant(images[:32]))


def test_projection_discriminator_with_spectral_norm_normalises_every_layer_as_in_the_paper(tmp_path):
    """Miyato & Koyama: spectral norm on all of D's layers, the output layer psi and the class
    embedding V included; the logit is psi(phi(x)) + <V y, phi(x)>."""
    keras.utils.set_random_seed(0)
    gan = build_gan("cgan", (2,), latent_dim=4, num_classes=3, hidden=(8,), spectral_norm=True)
    d = gan.discriminator
    wrapped = {layer.layer.name for layer in d.layers if isinstance(layer, keras.layers.SpectralNormalization)}
    dense = {layer.name for layer in d._flatten_layers() if isinstance(layer, keras.layers.Dense)}
    assert {"unconditional_logit", "class_projection"} <= wrapped and dense == wrapped
    x, y = np.random.default_rng(0).normal(size=(5, 2)).astype("float32"), np.array([0, 1, 2, 1, 0])
    phi = keras.Model(d.inputs, d.get_layer("projection").input[1])([x, y]).numpy()
    psi = keras.Model(d.inputs, d.get_layer("logit").input[0])([x, y]).numpy()
    v = next(layer for layer in d.layers if getattr(layer, "layer", None) is not None
             and layer.layer.name == "class_projection").layer.kernel.numpy()
    np.testing.assert_allclose(d([x, y]).numpy()[:, 0], psi[:, 0] + np.sum(v[y] * phi, axis=1), rtol=1e-5, atol=1e-6)
    labels = np.random.default_rng(1).integers(0, 3, 64)
    fit(gan, tf.data.Dataset.from_tensor_slices((x[labels % 5], labels)).repeat().batch(16), steps=2)
    assert_same_after_reload(d, [x, y], tmp_path / "d.keras")


# --------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss", ["wasserstein", "hinge", "least_squares"])
def test_each_loss_trains_with_finite_losses(loss):
    points = np.random.default_rng(0).normal(size=(512, 2)).astype("float32")
    gan = build_gan("mlp", (2,), latent_dim=4, hidden=(16,), loss=loss, d_steps=2 if loss == "wasserstein" else None)
    history = fit(gan, tf.data.Dataset.from_tensor_slices(points).repeat().batch(64), steps=3)
    assert set(history) == set(gan.metric_names) and all(np.isfinite(history[name][-1]) for name in history)
    if loss == "wasserstein":
        assert (gan.d_steps, gan.gradient_penalty) == (2, 10.0)


def test_gradient_penalty_is_float32_under_mixed_float16():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        gan = build_gan("dcgan", (8, 8, 1), latent_dim=8, width=8, loss="wasserstein", d_steps=1, spectral_norm=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert gan.uses_float16()
    real = tf.random.uniform((16, 8, 8, 1), -1.0, 1.0)
    fake = gan.generate(gan.sample_latent(16, "d_latent"))
    assert fake.dtype == tf.float32
    penalty = gan.gradient_penalty_value(real, fake, None)
    assert penalty.dtype == tf.float32 and np.isfinite(float(penalty))
    history = fit(gan, tf.data.Dataset.from_tensor_slices(real).repeat().batch(8), steps=2)
    assert np.isfinite(history["d_loss"][-1]) and np.isfinite(history["g_loss"][-1])


# --------------------------------------------------------------------- LAPGAN


def pixel_frechet(real, fake):
    return metrics.compute_frechet(real.reshape(len(real), -1), fake.reshape(len(fake), -1))["frechet_distance"]


@pytest.fixture(scope="module")
def trained_lapgan():
    """A 3-level LAPGAN (4 -> 8 -> 16) on digits resized to 16x16, with its metric before/after."""
    keras.utils.set_random_seed(0)
    images, _ = digits(16)
    gan = build_gan("lapgan", (16, 16, 1), latent_dim=24, levels=3, width=16, hidden=(128,), ema_decay=0.9)
    before = pixel_frechet(images[:512], gan.sample(512, seed=3).numpy())
    data = tf.data.Dataset.from_tensor_slices(images).shuffle(2048, seed=0).repeat().batch(64)
    history = fit(gan, data, steps=250, d_lr=2e-4, g_lr=1e-3)
    after = pixel_frechet(images[:512], gan.sample(512, seed=3).numpy())
    return gan, history, before, after


def test_lapgan_samples_have_the_right_size_and_its_metric_improves(trained_lapgan):
    gan, history, before, after = trained_lapgan
    assert isinstance(gan, LAPGAN) and gan.levels == 3
    samples = gan.sample(8, seed=0).numpy()
    assert samples.shape == (8, 16, 16, 1) and np.abs(samples).max() <= 1.0
    z = np.random.default_rng(0).normal(size=(4, 24)).astype("float32")
    chain = gan.level_images(z)
    assert [image.shape[1] for image in chain] == [4, 8, 16]
    np.testing.assert_allclose(chain[-1], gan.generator(z), atol=1e-5)  # the chain is the generator
    assert after < 0.7 * before, (before, after)
    assert {"d_loss", "g_loss", "level_0_d_loss", "level_2_g_loss"} <= set(history)
    level_losses = [history[f"level_{k}_d_loss"][-1] for k in range(3)]
    assert history["d_loss"][-1] == pytest.approx(np.mean(level_losses), rel=1e-5)  # the levels' average
    assert int(gan.trackers["d_loss"].count) == 250
    assert int(gan.step) == 250 and all(int(level.step) == 250 for level in gan.level_gans)


def test_laplacian_pyramid_reconstructs_the_image():
    images = tf.random.uniform((2, 16, 16, 3), -1.0, 1.0)
    coarse, *bands = laplacian_pyramid(images, 3)
    assert coarse.shape == (2, 4, 4, 3) and [r.shape[1] for r, _ in bands] == [8, 16]
    rebuilt = coarse
    for residual, condition in bands:
        np.testing.assert_allclose(upsample(rebuilt), condition, atol=1e-6)
        rebuilt = upsample(rebuilt) + residual
    np.testing.assert_allclose(rebuilt, images, atol=1e-5)


def test_lapgan_reloads_identically_and_checkpoint_restores(trained_lapgan, tmp_path):
    gan, _, _, _ = trained_lapgan
    z = np.random.default_rng(0).normal(size=(4, 24)).astype("float32")
    assert_same_after_reload(gan.generator, z, tmp_path / "generator.keras")
    assert_same_after_reload(gan.discriminator, gan.generator(z), tmp_path / "discriminator.keras")
    assert_same_after_reload(gan.ema_generator(), z, tmp_path / "generator_ema.keras")
    saved = gan.checkpoint().write(str(tmp_path / "ckpt"))
    fresh = build_gan("lapgan", (16, 16, 1), latent_dim=24, levels=3, width=16, hidden=(128,), ema_decay=0.9)
    fresh.compile()
    fresh.build_optimizers()
    fresh.checkpoint().read(saved).assert_existing_objects_matched()
    np.testing.assert_allclose(fresh.generator(z), gan.generator(z), atol=1e-6)
    assert int(fresh.level_gans[1].step) == int(gan.level_gans[1].step) == 250
    assert int(fresh.level_gans[2].g_optimizer.iterations) == int(gan.level_gans[2].g_optimizer.iterations) > 0


# ---------------------------------------------------------------------- SRGAN


def photo_pairs():
    """Patches of scikit-learn's two sample photos (left part) and their held-out right parts."""
    photos = [tf.image.resize(p, (212, 320), "area").numpy() / 127.5 - 1.0 for p in load_sample_images().images]
    train = np.stack([p[y:y + 32, x:x + 32] for p in photos for x in range(0, 192, 4) for y in range(0, 180, 8)])
    held_out = np.stack([p[:, 224:] for p in photos])  # two whole 212x96 images, never seen in training
    low = lambda high: tf.image.resize(high, (high.shape[1] // 4, high.shape[2] // 4), "area").numpy()  # noqa: E731
    return (low(train), train.astype("float32")), (low(held_out), held_out.astype("float32"))


def as_uint8(images):
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype("uint8")


@pytest.fixture(scope="module")
def trained_srgan():
    keras.utils.set_random_seed(0)
    (low, high), held_out = photo_pairs()
    data = tf.data.Dataset.from_tensor_slices((low, high)).shuffle(len(low), seed=0).repeat().batch(16)
    gan = build_gan("srgan", (32, 32, 3), lowres_shape=(8, 8, 3), residual_blocks=2, filters=32, width=16,
                    stages=3, dense_units=64, batch_norm=False, pretrain_steps=270)
    g_lr = keras.optimizers.schedules.PiecewiseConstantDecay([270], [1e-3, 1e-4])
    gan.compile(keras.optimizers.Adam(1e-4, 0.9), keras.optimizers.Adam(g_lr, 0.9))
    history = gan.fit(data, epochs=1, steps_per_epoch=300, verbose=0).history
    return gan, history, held_out


def test_srgan_beats_bicubic_on_held_out_photos(trained_srgan):
    gan, history, (low, high) = trained_srgan
    assert isinstance(gan, SRGAN) and gan.scale == 4
    upscaled = gan.generator.predict(low, verbose=0)  # fully convolutional: whole 53x24 images
    assert upscaled.shape == high.shape
    bicubic_psnr = metrics.psnr(as_uint8(high), as_uint8(bicubic_upscale(low, 4)))
    srgan_psnr = metrics.psnr(as_uint8(high), as_uint8(upscaled))
    assert srgan_psnr > bicubic_psnr, (srgan_psnr, bicubic_psnr)
    assert np.isfinite(history["d_loss"][-1])


def test_srgan_reloads_identically(trained_srgan, tmp_path):
    gan, _, (low, high) = trained_srgan
    assert gan.generator.inputs[0].name == "lowres"
    assert_same_after_reload(gan.generator, low, tmp_path / "generator.keras")
    assert_same_after_reload(gan.discriminator, high[:, :32, :32], tmp_path / "discriminator.keras")


def test_srgan_vgg_feature_loss_from_a_local_weights_file(tmp_path):
    weights = tmp_path / "vgg19_notop.weights.h5"
    keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights)
    options = dict(lowres_shape=(16, 16, 1), scale=2, residual_blocks=1, filters=8, width=8, stages=2, dense_units=8)
    gan = build_gan("srgan", (32, 32, 1), vgg_weights=str(weights), vgg_layer="block2_conv2", **options)
    real, fake = tf.random.uniform((4, 32, 32, 1), -1.0, 1.0), tf.random.uniform((4, 32, 32, 1), -1.0, 1.0)
    pixel_only = build_gan("srgan", (32, 32, 1), **options)
    with_features = gan.content_loss(real, fake).numpy()
    assert with_features.shape == (4,) and np.all(with_features > pixel_only.content_loss(real, fake).numpy())
    low = tf.image.resize(real, (16, 16), "area")
    history = fit(gan, tf.data.Dataset.from_tensor_slices((low, real)).repeat().batch(2), steps=2)
    assert np.isfinite(history["g_loss"][-1])
    with pytest.raises(ValueError, match="never downloaded"):
        build_gan("srgan", (32, 32, 1), vgg_weights=str(tmp_path / "missing.h5"), **options)
