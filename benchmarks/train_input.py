"""Is the input pipeline ever the bottleneck? Train component on TFRecords vs in-memory tensors.

Same run, same model (the Train defaults: DCGAN width 32 on 32x32x1 digits, batch 64):
  A. ``train.train_model`` reading processed TFRecords through ``reader.make_dataset``;
     images/s from its own TensorBoard ``images_per_second`` windows, the first (tracing) dropped;
  B. the same GAN fitting one in-memory float32 batch of real images repeated
     (``Dataset.from_tensors(batch).repeat()``): no reading, decoding or shuffling at all, so B is
     the model's compute-bound speed; timed after the same warm-up.
A and B alternate (A, B, A, B) so a busy machine slows both alike. Also prints the model FLOP
utilisation (MFU) against a 2048^2 float32 matmul measured here.

    python3 benchmarks/train_input.py [--steps 300] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

from ganpipe.components import train  # noqa: E402
from measure import matmul_gflops  # noqa: E402  (benchmarks/measure.py)

LOG_EVERY = 50


def write_digits(root: str, size: int = 32) -> tuple[dict, np.ndarray]:
    """sklearn digits at size x size in Preprocess's processed format (4 shards); returns the
    schema and the same images as float32 in [-1, 1]."""
    digits = load_digits()
    images = tf.image.resize(digits.images[..., None] / 16.0, (size, size)).numpy()
    images = (images * 255).round().clip(0, 255).astype("uint8")
    os.makedirs(os.path.join(root, "train"))
    for shard in range(4):
        with tf.io.TFRecordWriter(os.path.join(root, "train", f"part-{shard:05d}.tfrecord")) as writer:
            for i in range(shard, len(images), 4):
                feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images[i].tobytes()])),
                           "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(digits.target[i])]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    schema = {"kind": "image", "shape": [size, size, 1], "dtype": "uint8", "channels": 1, "num_classes": 10,
              "label_names": [str(i) for i in range(10)], "lowres_shape": None,
              "counts": {"train": len(images), "eval": 0}}
    return schema, images.astype("float32") / 127.5 - 1.0


def component_images_per_second(root: str, schema: dict, params: dict) -> float:
    output = tempfile.mkdtemp(prefix="train-input-")
    train.train_model(root, schema, output, log=lambda message: None, **params)
    events = event_accumulator.EventAccumulator(os.path.join(output, "logs", "train"),
                                                size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    rates = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("images_per_second")][1:]
    return statistics.harmonic_mean(rates)  # equal windows of steps: total images / total time


class Stopwatch(keras.callbacks.Callback):
    """Times batches ``warmup``..``total`` and stops training after ``total`` batches."""

    def __init__(self, warmup: int, total: int):
        super().__init__()
        self.warmup, self.total, self.batches = warmup, total, 0
        self.started = self.seconds = None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.batches == self.warmup:
            self.started = time.perf_counter()
        if self.batches == self.total:
            self.seconds = time.perf_counter() - self.started
            self.model.stop_training = True


def in_memory_images_per_second(images: np.ndarray, schema: dict, params: dict) -> float:
    gan = train.build_gan(schema, train.COMPONENT.resolve_parameters(params))
    stopwatch = Stopwatch(warmup=LOG_EVERY, total=params["steps"])
    batch = params["batch_size"]
    resident = tf.data.Dataset.from_tensors(tf.constant(images[:batch])).repeat()
    gan.fit(resident, epochs=1, steps_per_epoch=params["steps"], verbose=0, shuffle=False, callbacks=[stopwatch])
    return (stopwatch.total - stopwatch.warmup) * batch / stopwatch.seconds


def layer_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass per sample (Dense and conv layers)."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            macs += int(np.prod(layer.input.shape[1:3])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Conv2D):
            macs += int(np.prod(layer.output.shape[1:3])) * int(np.prod(layer.kernel.shape))
    return macs


def train_flops_per_image(gan) -> float:
    """D step: G forward, D forward+backward on real and fake (3 passes x 2); G step: G forward and
    backward (3), D forward and backward to its input (2). 2 FLOPs per multiply-accumulate."""
    return 2.0 * (4 * layer_macs(gan.generator) + 8 * layer_macs(gan.discriminator))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="train-input-data-")
    schema, images = write_digits(root)
    params = {"steps": args.steps, "log_every": LOG_EVERY, "sample_every": 10 * args.steps,
              "checkpoint_every": 10 * args.steps, "batch_size": 64}
    component, in_memory, matmul = [], [], []
    for _ in range(args.rounds):
        matmul.append(matmul_gflops(repeats=5, trials=5))
        component.append(component_images_per_second(root, schema, params))
        in_memory.append(in_memory_images_per_second(images, schema, params))
    gflops = max(matmul)
    flops = train_flops_per_image(train.build_gan(schema, train.COMPONENT.resolve_parameters(params)))
    result = {
        "component_tfrecord_images_per_s": [round(x, 1) for x in component],
        "in_memory_images_per_s": [round(x, 1) for x in in_memory],
        "ratio": round(sum(component) / sum(in_memory), 3),
        "train_mflop_per_image": round(flops / 1e6, 1),
        "matmul_2048_gflops": round(gflops, 1),
        "mfu_component": round(statistics.mean(component) * flops / (gflops * 1e9), 3),
        "mfu_in_memory": round(statistics.mean(in_memory) * flops / (gflops * 1e9), 3),
    }
    print(json.dumps(result, indent=2))
    print(f"TFRecord component / in-memory images/s: {result['ratio']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
