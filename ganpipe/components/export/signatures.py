"""Export's serving endpoints: ``serving_default``, ``generate`` (bounded) and SRGAN's ``upscale``."""
from __future__ import annotations

import keras
import tensorflow as tf

from ganpipe.components.base import ComponentError

GENERATE_SEED_WORD = 0x6A11  # second word of generate's stateless seed




def build_archive(generator: keras.Model, info: dict,
                  max_generate_samples: int = 1024) -> tuple[keras.export.ExportArchive, list[str]]:
    """The ExportArchive with this model kind's endpoints, and their names."""
    archive = keras.export.ExportArchive()
    archive.track(generator)
    if info.get("family") == "srgan":
        # The training size, not [None, None]: G's bicubic skip (UpSampling2D) needs static sides.
        lowres_spec = [tf.TensorSpec([None, *lowres_shape(info)], tf.uint8, name="lowres")]

        def upscale(lowres):
            return image_outputs(generator(tf.cast(lowres, tf.float32) / 127.5 - 1.0, training=False))

        for name in ("serving_default", "upscale"):
            archive.add_endpoint(name, upscale, input_signature=lowres_spec)
        return archive, ["serving_default", "upscale"]

    outputs = image_outputs if info.get("data_kind", "image") == "image" else vector_outputs(info.get("normalization"))
    latent_dim = int(generator.inputs[0].shape[-1])
    latent_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="latent")
    generate_spec = [tf.TensorSpec([], tf.int32, name="num_samples"), tf.TensorSpec([], tf.int64, name="seed")]

    def noise(count, seed):
        return tf.random.stateless_normal(tf.stack([count, latent_dim]),
                                          seed=tf.stack([seed, tf.constant(GENERATE_SEED_WORD, tf.int64)]))

    if len(generator.inputs) == 2:
        num_classes = int(info.get("num_classes") or 0)
        if num_classes < 2:
            raise ComponentError(f"model.json: a conditional generator needs num_classes >= 2, got {num_classes}")

        def serve(latent, label):
            return outputs(generator([latent, tf.cast(label, tf.int32)], training=False))

        def draw(count, seed):
            labels = tf.range(tf.cast(count, tf.int64)) % num_classes
            return {**_without_float(serve(noise(count, seed), labels)), "labels": labels}

        archive.add_endpoint("serving_default", serve,
                             input_signature=[latent_spec, tf.TensorSpec([None], tf.int64, name="label")])
    else:
        def serve(latent):
            return outputs(generator(latent, training=False))

        def draw(count, seed):
            return _without_float(serve(noise(count, seed)))

        archive.add_endpoint("serving_default", serve, input_signature=[latent_spec])

    def generate(num_samples, seed):
        # Bounded once, here, for every family: each op that allocates takes the checked count.
        return draw(bounded(num_samples, max_generate_samples), seed)

    archive.add_endpoint("generate", generate, input_signature=generate_spec)
    return archive, ["serving_default", "generate"]


def bounded(num_samples, limit: int):
    """``num_samples`` once checked to be in [0, limit]: a request outside fails with InvalidArgument."""
    checks = [tf.debugging.assert_non_negative(num_samples, message="generate: num_samples must be >= 0"),
              tf.debugging.assert_less_equal(num_samples, tf.constant(limit, num_samples.dtype),
                                             message=f"generate: num_samples must be at most {limit} "
                                                     "(export.max_generate_samples)")]
    with tf.control_dependencies(checks):
        return tf.identity(num_samples)


def lowres_shape(info: dict) -> list[int]:
    shape = info.get("lowres_shape")
    if not shape or len(shape) != 3:
        raise ComponentError(f"model.json: an srgan model needs lowres_shape [h, w, C], got {shape!r}")
    return [int(side) for side in shape]


def image_outputs(images):
    """Generator output in [-1, 1] -> uint8 images and float images in [0, 1]."""
    unit = tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) / 2.0, 0.0, 1.0)
    return {"images": tf.cast(tf.round(unit * 255.0), tf.uint8), "images_float": unit}


def vector_outputs(normalization: dict | None):
    """Standardised vectors -> ``samples`` in the data's units (mean/std from the schema)."""
    mean = tf.constant(normalization["mean"], tf.float32) if normalization else 0.0
    std = tf.constant(normalization["std"], tf.float32) if normalization else 1.0

    def to_samples(vectors):
        return {"samples": tf.cast(vectors, tf.float32) * std + mean}

    return to_samples


def _without_float(outputs: dict) -> dict:
    return {key: value for key, value in outputs.items() if key != "images_float"}

