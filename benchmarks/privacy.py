"""Differentially private digits: quality at epsilon 1, 3, 10 against non-private training, and the
cost of a private D step over a plain one.

    nice -n 10 python benchmarks/privacy.py --steps 800 --root /tmp/dp_bench > dp_bench.log

1. Step cost, in this process: the configs/dp_digits.yaml networks (cgan, width 32, 16x16, batch
   64), ``--timing-steps`` train steps of the plain GAN and of the private one, alternated over
   ``--rounds`` rounds (the machine's load moves both alike); the ratio of medians.
2. Quality: ``ganpipe run configs/dp_digits.yaml`` per setting on one root, one pipeline name per
   setting, ``--steps`` steps each, the noise calibrated to each target epsilon at delta 1e-5; the FCD beside its real-vs-real baseline from Evaluate, and
   the accuracy of the Classifier on 1,000 class-conditional samples (100 per digit) of the EMA
   generator, with its binomial standard error. The sample grid at epsilon 10 goes to
   ``--grid`` (a PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "dp_digits.yaml")
EPSILONS = (1.0, 3.0, 10.0)


def step_cost(timing_steps: int, rounds: int) -> dict:
    """Seconds per train step, plain and private, on the dp_digits networks (median over rounds)."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from ganpipe import ganmodels
    from ganpipe.ganmodels import privacy

    digits = load_digits()
    images = tf.image.resize(digits.images[..., None] / 8.0 - 1.0, (16, 16)).numpy().astype("float32")
    labels = digits.target.astype("int32")

    def timed(private: bool):
        gan = ganmodels.build_gan("cgan", (16, 16, 1), latent_dim=32, num_classes=10, width=32, ema_decay=0.999)
        gan.compile()
        gan.build_optimizers()
        if private:
            privacy.PrivateDiscriminatorTraining(gan, l2_norm_clip=1.0, noise_multiplier=1.0,
                                                 expected_batch_size=64).install()
            data = privacy.poisson_batches(images, labels, sampling_probability=64 / len(images), d_steps=1, seed=0)
        else:
            data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(64, drop_remainder=True)
        gan.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # traces and warms up
        started = time.perf_counter()
        gan.fit(data, steps_per_epoch=timing_steps, epochs=1, verbose=0)
        return (time.perf_counter() - started) / timing_steps

    plain, private = [], []
    for _ in range(rounds):
        plain.append(timed(False))
        private.append(timed(True))
    ratio = statistics.median(private) / statistics.median(plain)
    return {"plain_seconds": statistics.median(plain), "private_seconds": statistics.median(private),
            "ratio": ratio, "ratios": [p / q for p, q in zip(private, plain)], "rounds": rounds,
            "timing_steps": timing_steps, "expected_batch": 64, "per_example_gradients": "tf.vectorized_map"}


def pipeline_run(root: str, steps: int, epsilon: float | None) -> dict:
    """One ``ganpipe run`` of dp_digits; returns Train's and Evaluate's and the Classifier's outputs."""
    privacy = ["--set", f"train.privacy.target_epsilon={epsilon}"] if epsilon else ["--set", "train.privacy=null"]
    name = f"dp_eps{epsilon:g}" if epsilon else "dp_none"
    command = [sys.executable, "-m", "ganpipe.pipeline.cli", "run", CONFIG, "--root", root,
               "--set", f"pipeline.name={name}", "--set", f"train.steps={steps}", "--set", "train.eval_every=0",
               *privacy]
    environment = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode not in (0, 1):  # 1: not blessed is fine, the metrics exist
        raise RuntimeError(completed.stderr[-3000:])
    runs = json.loads(subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "runs", "--json", "--root", root,
                                      "--limit", "1"], capture_output=True, text=True, env=environment).stdout)
    shown = json.loads(subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "show", str(runs[0]["id"]),
                                       "--json", "--root", root], capture_output=True, text=True,
                                      env=environment).stdout)
    uris = {step["component"]: {k: o["uri"] for k, o in step["outputs"].items()} for step in shown["steps"]}
    return {"model": uris["Train"]["model"], "classifier": uris["Classifier"]["classifier"],
            "evaluation": uris["Evaluate"]["evaluation"]}


def sample_accuracy(model_dir: str, classifier_dir: str, per_class: int = 100) -> tuple[float, float]:
    """The Classifier's accuracy on ``per_class`` samples of each digit from the EMA generator,
    with the binomial standard error."""
    import keras
    import numpy as np

    from ganpipe import ganmodels  # noqa: F401  registers the custom layers
    from ganpipe.components.classifier import load_feature_model

    classifier, _ = load_feature_model(classifier_dir)
    generator = keras.models.load_model(os.path.join(model_dir, "generator_ema.keras"))
    labels = np.repeat(np.arange(10, dtype="int32"), per_class)
    z = np.random.default_rng(0).normal(size=(len(labels), generator.inputs[0].shape[1])).astype("float32")
    samples = generator.predict([z, labels], verbose=0, batch_size=250)
    predicted = np.argmax(classifier.predict(samples, verbose=0, batch_size=250)["probabilities"], axis=1)
    accuracy = float(np.mean(predicted == labels))
    return accuracy, float(np.sqrt(accuracy * (1 - accuracy) / len(labels)))


REPORTED = ("fcd", "kid", "cas", "copying_share", "membership_auc_d", "membership_auc_distance")


def quality(root: str, steps: int, grid: str, epsilons=EPSILONS) -> list[dict]:
    rows = []
    for epsilon in (None, *epsilons):
        uris = pipeline_run(root, steps, epsilon)
        with open(os.path.join(uris["model"], "model.json")) as f:
            info = json.load(f)
        with open(os.path.join(uris["evaluation"], "metrics.json")) as f:
            report = json.load(f)
        fcd = report["metrics"]["fcd"]
        measured = {key: [report["metrics"][key]["value"], report["metrics"][key]["std"]]
                    for key in REPORTED if key in report["metrics"]}
        accuracy, error = sample_accuracy(uris["model"], uris["classifier"])
        guarantee = info.get("privacy") or {}
        rows.append({"target_epsilon": epsilon, "epsilon": guarantee.get("epsilon"), "delta": guarantee.get("delta"),
                     "noise_multiplier": guarantee.get("noise_multiplier"), "steps": info["steps"],
                     "fcd": fcd["value"], "fcd_baseline": fcd.get("baseline"), "accuracy": accuracy,
                     "accuracy_se": error, "training_seconds": info["training_seconds"],
                     "evaluate": measured})
        print(json.dumps(rows[-1]), flush=True)
        if epsilon == 10.0:
            shutil.copyfile(os.path.join(uris["model"], "samples.png"), grid)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=800, help="train steps of each quality run")
    parser.add_argument("--root", default="/tmp/ganpipe-privacy-benchmark", help="pipeline root of the runs")
    parser.add_argument("--timing-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grid", default=os.path.join(REPO, "docs", "privacy_samples_eps10.png"))
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--epsilons", default=",".join(f"{e:g}" for e in EPSILONS),
                        help="target epsilons of the quality runs, beside a non-private one")
    args = parser.parse_args()
    if not args.skip_timing:
        print(json.dumps({"step_cost": step_cost(args.timing_steps, args.rounds)}), flush=True)
    if not args.skip_quality:
        print(json.dumps({"quality": quality(args.root, args.steps, args.grid,
                                                   tuple(float(e) for e in args.epsilons.split(",")))}), flush=True)


if __name__ == "__main__":
    main()
