"""Serving: ``serving_default`` of the exported SavedModel (``tf.saved_model.load``) vs the Keras
generator called in-process, same networks, same run.

The default pipeline's generator (DCGAN width 32, latent 64, 32x32x1 images; random weights, speed
does not depend on them) is exported by ``export_model`` and loaded back. Three callers get the
same latent batches:

    keras       generator(z, training=False), the eager Keras call (what a notebook does)
    keras_fn    the same call inside a tf.function (Keras's own compiled predict path)
    saved       loaded.signatures["serving_default"](latent=z): includes the uint8 conversion

Calls are timed one by one in interleaved rounds (load on the shared machine hits all alike);
throughput is images per second over all calls; the ratio saved / keras is the target (>= 0.9).

    python benchmarks/serving.py [--calls 200] [--rounds 3] [--batch-sizes 1,64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ganpipe import ganmodels  # noqa: E402
from ganpipe.components.export import export_model  # noqa: E402

SHAPE, LATENT, WIDTH = (32, 32, 1), 64, 32


def exported_generator(work: str):
    keras.utils.set_random_seed(0)
    generator, _ = ganmodels.build_networks("dcgan", SHAPE, latent_dim=LATENT, width=WIDTH)
    model_dir = os.path.join(work, "model")
    os.makedirs(model_dir)
    generator.save(os.path.join(model_dir, "generator.keras"))
    with open(os.path.join(model_dir, "model.json"), "w") as f:
        f.write(f'{{"family": "dcgan", "latent_dim": {LATENT}, "num_classes": 0, "data_kind": "image", '
                f'"data_shape": {list(SHAPE)}}}')
    result = export_model(model_dir, {"kind": "image", "shape": list(SHAPE)}, {"blessed": True, "reasons": []},
                          os.path.join(work, "pushed"), model_name="bench", export_base=os.path.join(work, "serving"),
                          log=lambda message: None)
    return generator, tf.saved_model.load(result["destination"]).signatures["serving_default"]


def time_calls(call, batches) -> list[float]:
    seconds = []
    for z in batches:
        started = time.perf_counter()
        out = call(z)
        next(iter(out.values())).numpy() if isinstance(out, dict) else out.numpy()  # wait for the result
        seconds.append(time.perf_counter() - started)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per caller per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,64")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        generator, serving_default = exported_generator(work)
        keras_fn = tf.function(lambda z: generator(z, training=False))
        callers = {"keras": lambda z: generator(z, training=False), "keras_fn": keras_fn,
                   "saved": lambda z: serving_default(latent=z)}
        print(f"DCGAN generator {SHAPE}, latent {LATENT}, width {WIDTH}; {args.calls} calls x {args.rounds} rounds")
        print(f"{'batch':>5} {'caller':>9} {'img/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for batch_size in map(int, args.batch_sizes.split(",")):
            rng = np.random.default_rng(batch_size)
            batches = [tf.constant(rng.standard_normal((batch_size, LATENT)), tf.float32) for _ in range(args.calls)]
            times = {name: [] for name in callers}
            for name, call in callers.items():  # warm-up: tracing, first-call allocations
                time_calls(call, batches[:5])
            for _ in range(args.rounds):
                for name, call in callers.items():
                    times[name].extend(time_calls(call, batches))
            throughput = {name: batch_size * len(t) / sum(t) for name, t in times.items()}
            for name, t in times.items():
                p50, p99 = statistics.median(t) * 1e3, float(np.percentile(t, 99)) * 1e3
                print(f"{batch_size:>5} {name:>9} {throughput[name]:>9.0f} {p50:>8.2f} {p99:>8.2f}")
            print(f"{batch_size:>5} ratio saved/keras {throughput['saved'] / throughput['keras']:.2f}, "
                  f"saved/keras_fn {throughput['saved'] / throughput['keras_fn']:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
