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
