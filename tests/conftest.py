"""Shared test set-up: one pytest process, TensorFlow imported once, quiet logs; the tiny training
configurations and the processed digits that the training tests share."""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts and ends in float32, whatever a mixed-precision test set."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def gcs_bucket():
    """A GCS emulator (gcp-storage-emulator, in memory) for this session: ``gs://ganpipe-cli``
    through Beam's GCS client in this process and in subprocesses (``STORAGE_EMULATOR_HOST``).
    TensorFlow's own GCS filesystem ignores the emulator, so only non-TF code can use it."""
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("apache_beam.io.gcp.gcsio")
    pytest.importorskip("gcp_storage_emulator")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
                                f"--port={port}", "--in-memory", "--default-bucket=ganpipe-cli", "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None and time.time() < deadline, process.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        yield "gs://ganpipe-cli"
        os.environ.pop("STORAGE_EMULATOR_HOST")
        if previous:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
    finally:
        process.terminate()
        process.wait(timeout=30)


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


TINY_DCGAN = {"family": "dcgan", "network": {"width": 8}, "latent_dim": 8, "batch_size": 16}
TINY_MLP = {"family": "mlp", "network": {"hidden": [16, 16]}, "latent_dim": 8, "batch_size": 16}


def write_processed_examples(root, size=16, n_eval=64, lowres_factor=None):
    """sklearn digits upscaled to size x size in Preprocess's processed format, two train shards;
    with ``lowres_factor``, plus ``image_lowres`` (area-downscaled) for super-resolution."""
    digits = load_digits()
    images = as_uint8(tf.image.resize(digits.images[..., None] / 16.0, (size, size)))
    lowres = as_uint8(tf.image.resize(images / 255.0, (size // lowres_factor,) * 2, "area")) if lowres_factor else None
    splits = {"eval": [range(n_eval)], "train": [range(n_eval, 900), range(900, len(images))]}
    for split, shards in splits.items():
        os.makedirs(os.path.join(root, split))
        for number, indices in enumerate(shards):
            with tf.io.TFRecordWriter(os.path.join(root, split, f"part-{number:05d}.tfrecord")) as writer:
                for i in indices:
                    features = {"image": bytes_feature(images[i]),
                                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(digits.target[i])]))}
                    if lowres is not None:
                        features["image_lowres"] = bytes_feature(lowres[i])
                    writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    schema = {"kind": "image", "shape": [size, size, 1], "dtype": "uint8", "channels": 1, "num_classes": 10,
              "label_names": [str(i) for i in range(10)],
              "lowres_shape": list(lowres.shape[1:]) if lowres is not None else None,
              "counts": {"train": len(images) - n_eval, "eval": n_eval}}
    with open(os.path.join(root, "schema.json"), "w") as f:
        json.dump(schema, f)
    with open(os.path.join(root, "statistics.json"), "w") as f:
        json.dump({"train": {"count": schema["counts"]["train"], "pixel_mean": 0.21}}, f)
    return schema


def as_uint8(images):
    return (np.asarray(images) * 255).round().clip(0, 255).astype("uint8")


def bytes_feature(array):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))


def checkpoint_values(checkpoint_dir):
    """Every saved tensor (networks, both optimizers, EMA, step) of the latest checkpoint."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(checkpoint_dir))
    bookkeeping = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter")
    return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()
            if not name.startswith(bookkeeping)}
