"""Floor 1: Keras networks, GAN losses, the GAN model and its train_step, metrics math.

Usable alone, like a Keras library::

    from ganpipe import ganmodels
    g, d = ganmodels.build_networks("dcgan", (32, 32, 1), latent_dim=64)
    gan = ganmodels.GAN(g, d, latent_dim=64)
    gan.compile()
    gan.fit(images_in_minus1_1.batch(64))
"""
from ganpipe.ganmodels import losses
from ganpipe.ganmodels.gan import GAN, METRIC_NAMES
from ganpipe.ganmodels.updates import default_optimizer, inner_optimizer
from ganpipe.ganmodels.networks import FAMILIES, build_networks, register_family
from ganpipe.ganmodels.families import build_gan  # registers cgan, lapgan, srgan and their layers

__all__ = ["GAN", "METRIC_NAMES", "FAMILIES", "build_gan", "build_networks", "default_optimizer", "inner_optimizer",
           "losses", "register_family"]
