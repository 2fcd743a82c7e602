"""One call from a family name to a ready GAN model: networks from the registry, the right class.

    gan = build_gan("cgan", (8, 8, 1), latent_dim=32, num_classes=10, loss="hinge", width=32)
    gan = build_gan("srgan", (32, 32, 3), lowres_shape=(8, 8, 3), residual_blocks=8)

Importing this module registers every family (``mlp``, ``dcgan``, ``cgan``, ``lapgan``,
``srgan``) and the custom layers their ``.keras`` files need.
"""
from __future__ import annotations

from ganpipe.ganmodels.conditional import ConditionalGAN
from ganpipe.ganmodels.gan import GAN
from ganpipe.ganmodels.lapgan import LAPGAN
from ganpipe.ganmodels.networks import build_networks, build_packed_discriminator
from ganpipe.ganmodels import maxout  # noqa: F401  registers the maxout_mlp family
from ganpipe.ganmodels.srgan import SRGAN

# Keyword arguments of the GAN model (the rest go to the family's network builder).
GAN_OPTIONS = ("loss", "d_steps", "label_flip", "label_smoothing", "gradient_penalty", "ema_decay",
               "reuse_fakes", "seed", "r1", "r2", "r1_interval", "diffaugment")
# Remedies LAPGAN's per-level games do not take (its levels get only the core options).
NOT_FOR_LAPGAN = ("r1", "r2", "diffaugment")
SRGAN_OPTIONS = ("adversarial_weight", "pixel_weight", "feature_weight", "vgg_weights", "vgg_layer",
                 "pretrain_steps")


def build_gan(family, data_shape, latent_dim=64, num_classes=0, lowres_shape=None, **options) -> GAN:
    """Builds ``family``'s networks and wraps them in its GAN class, uncompiled.

    - ``mlp``, ``dcgan`` -> ``GAN`` (labels in the batches are ignored);
    - ``cgan`` -> ``ConditionalGAN`` (needs ``num_classes >= 2``; batches ``(samples, labels)``);
    - ``lapgan`` -> ``LAPGAN`` (batches of images);
    - ``srgan`` -> ``SRGAN`` (needs ``lowres_shape``; ``data_shape`` is the high-resolution
      shape; batches ``(lowres, highres)``).

    ``options`` holds GAN options (``GAN_OPTIONS``, plus ``SRGAN_OPTIONS`` for srgan) and the
    family's network sizes (see its builder's docstring); an unknown name is an error naming the
    allowed ones. A ``None`` value means "the default", so a caller can pass unset config keys
    (``d_steps`` and ``gradient_penalty`` default per loss, see ``GAN``).

    ``packing=m`` (PacGAN) builds D for packs of m samples and wraps it (``packing``); mlp,
    dcgan and maxout_mlp only.

    Weight penalties: ``l1`` / ``l2`` apply to both networks; ``d_l1``, ``d_l2``, ``g_l1``,
    ``g_l2`` to one each. The initial weights do not depend on the penalties.
    """
    options = {name: value for name, value in options.items() if value is not None}
    model_keys = GAN_OPTIONS + (SRGAN_OPTIONS if family == "srgan" else ())
    model_options = {name: options.pop(name) for name in model_keys if name in options}
    packing = options.pop("packing", 1)
    if family == "lapgan" and any(model_options.get(name) for name in NOT_FOR_LAPGAN):
        raise ValueError(f"model family 'lapgan' does not take {', '.join(NOT_FOR_LAPGAN)}")
    if family == "srgan":
        options["scale"] = _srgan_scale(data_shape, lowres_shape, options.get("scale"))
    g_penalties, d_penalties = _network_penalties(options)
    generator, discriminator = build_networks(family, data_shape, latent_dim, num_classes, **options, **g_penalties)
    if d_penalties != g_penalties:
        # A second build for D's penalties; D then takes the first build's initial weights.
        _, penalised = build_networks(family, data_shape, latent_dim, num_classes, **options, **d_penalties)
        penalised.set_weights(discriminator.get_weights())
        discriminator = penalised
    if packing != 1:
        discriminator = build_packed_discriminator(family, data_shape, latent_dim, packing, **options, **d_penalties)
    if family == "cgan":
        return ConditionalGAN(generator, discriminator, latent_dim, num_classes, **model_options)
    if family == "lapgan":
        return LAPGAN(generator, discriminator, latent_dim, **model_options)
    if family == "srgan":
        return SRGAN(generator, discriminator, **model_options)
    return GAN(generator, discriminator, latent_dim, **model_options)


def _network_penalties(options):
    """Pops the penalty options; returns G's and D's ``{l1, l2}`` builder arguments (zeros left out)."""
    shared = {key: options.pop(key) for key in ("l1", "l2") if key in options}
    per_network = {key: options.pop(key) for key in ("d_l1", "d_l2", "g_l1", "g_l2") if key in options}
    if any(shared.values()) and any(per_network.values()):
        raise ValueError(f"weight penalties: give either {'/'.join(shared)} (both networks) or "
                         f"{'/'.join(per_network)} (one network each), not both")

    def penalties(network):
        chosen = {key: per_network.get(f"{network}_{key}", shared.get(key, 0.0)) for key in ("l1", "l2")}
        return {key: value for key, value in chosen.items() if value}

    return penalties("g"), penalties("d")


def _srgan_scale(data_shape, lowres_shape, given):
    """The upscaling factor implied by the two shapes (and equal to ``scale`` if that is given)."""
    if lowres_shape is None:
        raise ValueError("model family 'srgan' needs lowres_shape: preprocess the data with a low-resolution copy")
    high, low = tuple(data_shape), tuple(lowres_shape)
    scale = high[0] // low[0] if len(low) == 3 and low[0] else 0
    if len(high) != 3 or high != (low[0] * scale, low[1] * scale, low[2]) or (given is not None and given != scale):
        raise ValueError(f"srgan: high-resolution shape {high} is not low-resolution shape {low} "
                         f"upscaled by a factor of 2 or 4{'' if given is None else f' (scale={given})'}")
    return scale
