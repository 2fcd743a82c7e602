"""FCD of trained digits models against a real-vs-real baseline on 1,000 reference samples.

The built-in digits data set has 1,797 images (about 1,617 train, 180 eval), and Evaluate caps
its sample count at the eval split's size, so its FCD compares only ~180 samples per set, where
FCD's small-sample bias dominates. This script measures with more, on the same classifier
features Evaluate uses:

  reference R   1,000 train images (a seeded choice)
  held-out H    every other real image (the rest of train + all of eval): 797 images, disjoint from R
  fakes F       1,000 samples of the model (EMA generator when there is one)

and reports FCD(F, R) with 1,000 per side, and the like-for-like pair FCD(F[:797], R) vs
FCD(H, R), both with 797 vs 1,000 samples, so the same small-sample bias is in both (a baseline
with 1,000 distinct real images on each side needs 2,000 real images; the data set has 1,797).
Also: the share of fakes the classifier puts in each class.

    python benchmarks/digits_fcd.py ROOT PIPELINE [PIPELINE ...] [--data-pipeline NAME]
"""
from __future__ import annotations

import argparse
import glob
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from ganpipe.components import classifier, evaluate  # noqa: E402
from ganpipe.components.reader import make_dataset  # noqa: E402
from ganpipe.ganmodels import metrics  # noqa: E402

REFERENCE, FAKES, SEED = 1000, 1000, 0


def latest(root: str, pipeline: str, component: str, output: str) -> str:
    paths = glob.glob(os.path.join(root, pipeline, component, output, "*"))
    if not paths:
        raise SystemExit(f"no {component}/{output} under {os.path.join(root, pipeline)}")
    return max(paths, key=lambda path: int(os.path.basename(path)))


def real_images(examples: str, schema: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split``."""
    batches = list(make_dataset(examples, schema, split=split, batch_size=256, shuffle=False, with_labels=True,
                                drop_remainder=False, cache=False))
    return tuple(np.concatenate([batch[part].numpy() for batch in batches]) for part in (0, 1))


def measure(root: str, pipeline: str, data_pipeline: str) -> dict:
    """``pipeline``'s model, with the data and classifier of ``data_pipeline`` (same data set)."""
    examples = latest(root, data_pipeline, "Preprocess", "examples")
    schema = json.load(open(os.path.join(latest(root, data_pipeline, "Preprocess", "schema"), "schema.json")))
    model_dir = latest(root, pipeline, "Train", "model")
    feature_model, _ = classifier.load_feature_model(latest(root, data_pipeline, "Classifier", "classifier"))
    generator, generator_file = evaluate.load_generator(model_dir, use_ema=True)

    (train, train_labels), (held, held_labels) = (real_images(examples, schema, split) for split in ("train", "eval"))
    order = np.random.default_rng(SEED).permutation(len(train))
    reference, held_out = train[order[:REFERENCE]], np.concatenate([train[order[REFERENCE:]], held])
    latent = np.random.default_rng(SEED).standard_normal((FAKES, generator.inputs[0].shape[-1])).astype("float32")
    conditions = []
    if len(generator.inputs) == 2:  # conditional: the held-out images' labels, so F[:797] and H match class for class
        conditions = [np.resize(np.concatenate([train_labels[order[REFERENCE:]], held_labels]), FAKES).astype("int32")]
    fakes = evaluate.batched_call(generator, [latent, *conditions], 256)

    extract = lambda x: evaluate.batched_call(feature_model, [x], 256)  # noqa: E731
    ref, held_f, fake_f = extract(reference), extract(held_out), extract(fakes)
    n = len(held_out)
    fcd = lambda a, b: metrics.compute_frechet(a, b)["frechet_distance"]  # noqa: E731
    classes = np.bincount(fake_f["probabilities"].argmax(axis=1), minlength=10) / FAKES
    info = json.load(open(os.path.join(model_dir, "model.json")))
    result = {
        "pipeline": pipeline, "generator": generator_file, "steps": info["steps"],
        "training_seconds": info.get("training_seconds"),
        "fcd_1000_vs_1000": fcd(ref["features"], fake_f["features"]),
        f"fcd_{n}_vs_1000": fcd(ref["features"], fake_f["features"][:n]),
        f"real_vs_real_{n}_vs_1000": fcd(ref["features"], held_f["features"]),
        "min_class_share": float(classes.min()), "class_shares": [round(float(c), 3) for c in classes],
    }
    result["ratio"] = result[f"fcd_{n}_vs_1000"] / result[f"real_vs_real_{n}_vs_1000"]
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("pipelines", nargs="+")
    parser.add_argument("--data-pipeline", help="pipeline whose Preprocess and Classifier outputs to use "
                        "(default: the first one)")
    args = parser.parse_args()
    for pipeline in args.pipelines:
        print(json.dumps(measure(args.root, pipeline, args.data_pipeline or args.pipelines[0])), flush=True)


if __name__ == "__main__":
    main()
