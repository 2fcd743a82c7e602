"""Shared test set-up: one pytest process, TensorFlow imported once, quiet logs."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts and ends in float32, whatever a mixed-precision test set."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def write_image_examples(root, images, labels=None, eval_count=0, label_names=()):
    """uint8 images [N, H, W, C] (and integer labels) in Preprocess's processed layout, the first
    ``eval_count`` in the eval split; returns the schema. For tests of the steps after Preprocess."""
    import json

    import tensorflow as tf

    from ganpipe.infra.beamio import serialize_example

    for split, rows in (("eval", range(eval_count)), ("train", range(eval_count, len(images)))):
        os.makedirs(os.path.join(root, split))
        with tf.io.TFRecordWriter(os.path.join(root, split, "part-00000.tfrecord")) as writer:
            for row in rows:
                label = None if labels is None else [int(labels[row])]
                writer.write(serialize_example(bytes_features=[("image", [images[row].tobytes()])],
                                               int_features=[("label", label)]))
    schema = {"kind": "image", "shape": list(images.shape[1:]), "channels": images.shape[-1], "dtype": "uint8",
              "lowres_shape": None, "label_names": list(label_names), "num_classes": len(label_names),
              "counts": {"train": len(images) - eval_count, "eval": eval_count}}
    with open(os.path.join(root, "schema.json"), "w") as f:
        json.dump(schema, f)
    return schema
