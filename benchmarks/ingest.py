"""Ingest + Preprocess on Beam's FnApiRunner vs a plain TFRecordWriter loop, and the tf.data reader.

Generates N 32x32 RGB PNGs in 10 class folders, then in the same run times
  1. a plain single-process loop: read file, decode with PIL, build the same processed
     tf.Example (key, image, label), split by a key hash, tf.io.TFRecordWriter;
  2. ganpipe Ingest + Preprocess (two Beam pipelines on ganpipe's default runner, the
     in-process FnApiRunner, every record's CRC verified on read);
  3. the same on the FnApiRunner in multi_processing mode with 2 worker processes;
and prints images/s for each and the ratios to the plain loop (target >= 0.6 for 2). All are
warmed up on a few images first (one-time imports), then timed in alternating rounds, median
reported, by wall clock and by CPU time of this process and its children (the machine is shared:
CPU time is less hurt by other load; multi_processing's worker CPU shows up there only partly,
as the workers outlive a run).
Then the reader's images/s on the processed shards (first epoch from disk, second from its
cache) against the default DCGAN's training rate measured here (target >= 20x).

    python benchmarks/ingest.py [--images 20000] [--rounds 3] [--workdir DIR] [--train-steps 10]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from ganpipe.components import ingest, preprocess, reader  # noqa: E402

SIZE = 32


def make_pngs(root: str, count: int) -> None:
    """Smooth random images plus noise, so PNG compression has something realistic to do."""
    rng = np.random.default_rng(0)
    for label in range(10):
        os.makedirs(os.path.join(root, str(label)), exist_ok=True)
    for i in range(count):
        base = Image.fromarray(rng.integers(0, 255, (4, 4, 3), np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
        pixels = np.clip(np.asarray(base, np.int16) + rng.integers(-20, 20, (SIZE, SIZE, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, str(i % 10), f"{i:06d}.png"))


def is_eval(key: str, eval_fraction: float = 0.1) -> bool:
    """A key-hash split like Ingest's (the same work; the exact rule lives in ganpipe.components.sources)."""
    return int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "big") < eval_fraction * 2**64


def plain_loop(root: str, output: str) -> int:
    """The baseline: what Ingest + Preprocess do, written as one straight loop."""
    os.makedirs(output)
    writers = {split: tf.io.TFRecordWriter(os.path.join(output, f"{split}.tfrecord")) for split in ingest.SPLITS}
    count = 0
    for label in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, label))):
            path = os.path.join(root, label, name)
            with open(path, "rb") as f:
                pixels = np.asarray(Image.open(io.BytesIO(f.read())).convert("RGB"))
            example = tf.train.Example(features=tf.train.Features(feature={
                "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pixels.tobytes()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }))
            writers["eval" if is_eval(path) else "train"].write(example.SerializeToString())
            count += 1
    for writer in writers.values():
        writer.close()
    return count


def beam_pipelines(root: str, output: str, beam_args=()) -> int:
    ingest.run_ingest(f"images:{root}", os.path.join(output, "raw"), beam_args=beam_args, log=lambda line: None)
    result = preprocess.run_preprocess(
        os.path.join(output, "raw"), os.path.join(output, "processed"), image_size=SIZE, channels=3,
        beam_args=beam_args, log=lambda line: None,
    )
    return result["statistics"]["records"]["written"]


def beam_multi_processing(root: str, output: str) -> int:
    return beam_pipelines(root, output, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])


RUNS = {"plain": plain_loop, "beam": beam_pipelines, "beam_mp2": beam_multi_processing}


def reader_rate(processed: str, batch_size: int = 64) -> tuple[float, float]:
    """Images/s of the first epoch (read + parse + cache) and the second (from the cache)."""
    dataset = reader.make_dataset(processed, processed, batch_size=batch_size, seed=0)
    rates = []
    for _ in range(2):
        start, count = time.perf_counter(), 0
        for batch in dataset:
            count += int(batch.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return rates[0], rates[1]


def trainer_rate(processed: str, steps: int, batch_size: int = 64) -> float:
    """Images/s the default model (DCGAN, latent 64, batch 64) trains at on this machine."""
    from ganpipe import ganmodels

    schema = reader.load_schema(processed)
    generator, discriminator = ganmodels.build_networks("dcgan", schema["shape"], latent_dim=64)
    gan = ganmodels.GAN(generator, discriminator, latent_dim=64)
    gan.compile()
    dataset = reader.make_dataset(processed, schema, batch_size=batch_size, repeat=True, seed=0)
    gan.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    gan.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its finished children (worker processes)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def timed(function, *args) -> tuple[int, float, float]:
    """(result, wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args)
    return result, time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--train-steps", type=int, default=10)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="ganpipe-bench-")
    root, warmup_root = os.path.join(workdir, "pngs"), os.path.join(workdir, "warmup")
    make_pngs(root, args.images)
    make_pngs(warmup_root, 200)
    print(f"{args.images} PNGs {SIZE}x{SIZE} RGB in {root}; load average {os.getloadavg()[0]:.1f}")

    for name, function in RUNS.items():
        shutil.rmtree(os.path.join(workdir, "warm-" + name), ignore_errors=True)  # a reused --workdir
        function(warmup_root, os.path.join(workdir, "warm-" + name))
    rates = {name + suffix: [] for name in RUNS for suffix in ("", "_cpu")}
    for round_index in range(args.rounds):
        for name, function in RUNS.items():
            output = os.path.join(workdir, name)
            shutil.rmtree(output, ignore_errors=True)
            count, wall, cpu = timed(function, root, output)
            assert count == args.images, (name, count)
            rates[name].append(count / wall)
            rates[name + "_cpu"].append(count / cpu)
        print(f"round {round_index}: " + ", ".join(f"{name} {rates[name][-1]:.0f} img/s" for name in RUNS))
    median = {name: statistics.median(values) for name, values in rates.items()}
    labels = {"plain": "plain TFRecordWriter loop", "beam": "Ingest + Preprocess, FnApiRunner in-process",
              "beam_mp2": "the same, multi_processing, 2 workers"}
    for name in RUNS:
        ratio = "" if name == "plain" else (f"  ratio {median[name] / median['plain']:.2f} by wall clock, "
                                            f"{median[name + '_cpu'] / median['plain_cpu']:.2f} by CPU time")
        print(f"{labels[name]:45s} {median[name]:8.0f} img/s (CPU time: {median[name + '_cpu']:.0f}){ratio}")
    print("target: in-process ratio >= 0.6")

    processed = os.path.join(workdir, "beam", "processed")
    first, cached = reader_rate(processed)
    trainer = trainer_rate(processed, args.train_steps)
    print(f"reader, first epoch:  {first:8.0f} img/s   {first / trainer:6.1f}x the trainer")
    print(f"reader, cached epoch: {cached:8.0f} img/s   {cached / trainer:6.1f}x the trainer")
    print(f"trainer (default DCGAN, 32x32x3, batch 64): {trainer:.0f} img/s (target: reader >= 20x)")


if __name__ == "__main__":
    main()
