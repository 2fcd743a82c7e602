"""Do Evaluate's metrics rank? Two checks, each against a known order.

1. Disturbances as in the FID paper (Heusel et al. 2017, Fig. 3): Gaussian noise, blur,
   salt-and-pepper, rectangles and mixing in another data set's images, each at 4 levels above
   0, applied to the real eval images, which Evaluate's own measuring code
   (``evaluate.measure.feature_metrics`` on a ``Fold``, the path a generator's samples take) receives as the
   fakes against the real train reference. Every distance must grow with the level: Spearman's
   rho of level vs value, signed so that 1.0 means the metric worsens with the level (precision,
   recall and coverage must fall). Data: labelled digits in the trained classifier's features; the
   same digits without labels and the built-in photos (32x32 patches) in the self-supervised
   encoder's features, beside the pooled pixels they replace. The photos' eval split is a strip
   on the right of each photo (no patch overlaps both splits), another distribution than the
   train patches, so there the disturbed images are a random part of the train split and the
   reference the rest. The same random draws serve every level, so a level differs from the next
   only by its strength.
2. ``--model DIR`` (a Train Model artifact of the built-in run, or its staging directory with
   ``checkpoints/``): each checkpoint's EMA generator measured by Evaluate as configured, beside a
   large-sample reference (FCD of 10,000 fakes against every train example).

    python benchmarks/evaluation.py --root /tmp/evaluation_bench [--data photos ...] [--model DIR]

The data come from the pipeline itself (``ganpipe run --until Preprocess``) under ``--root``.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402
import scipy.stats  # noqa: E402

from ganpipe.components import classifier, reference, specs  # noqa: E402
from ganpipe.components.evaluate import measure, samples  # noqa: E402
from ganpipe.ganmodels import metrics  # noqa: E402
from ganpipe.infra import storage  # noqa: E402

LEVELS = (0.0, 0.1, 0.25, 0.5, 0.75)
REPORTED = ("frechet_distance", "kernel_distance", "precision", "recall", "coverage")
PHOTOS = ["--set", "ingest.source=photos", "--set", "ingest.patch_size=32", "--set", "ingest.patch_stride=12",
          "--set", "ingest.eval_fraction=0.2", "--set", "preprocess.image_size=32", "--set", "preprocess.channels=3"]
REFERENCE_FAKES = 10_000
DATA = ("digits-labelled", "digits-unlabelled", "photos")


# ---------------------------------------------------------------------------------- disturbances


def gaussian_noise(x, level, rng):
    return np.clip((1 - level) * x + level * rng.standard_normal(x.shape), -1, 1)


def blur(x, level, rng):
    sigma = level * x.shape[1] / 4  # 0.75: 1.5 pixels on 8x8 digits, 6 on 32x32 patches
    return scipy.ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0)) if sigma else x


def salt_and_pepper(x, level, rng):
    hit = rng.random(x.shape[:3] + (1,)) < level
    return np.where(hit, np.where(rng.random(hit.shape) < 0.5, -1.0, 1.0), x)


def rectangles(x, level, rng):
    """A white square covering ``level`` of the image's area, one per image, at a random place (by
    area, so that the smallest level is more than one pixel of an 8x8 digit). White, not the FID
    paper's black: the digits' background is black, where a black square is invisible."""
    side = int(round(np.sqrt(level) * x.shape[1]))
    corners = rng.integers(0, x.shape[1] - side + 1, size=(len(x), 2))
    out = x.copy()
    for image, (top, left) in zip(out, corners):
        image[top:top + side, left:left + side] = 1.0
    return out


def mixing(other):
    def mix(x, level, rng):
        replaced = rng.permutation(len(x))[:int(round(level * len(x)))]
        out = x.copy()
        out[replaced] = other[rng.integers(len(other), size=len(replaced))]
        return out
    return mix


IMAGE_DISTURBANCES = {"gaussian noise": gaussian_noise, "blur": blur, "salt and pepper": salt_and_pepper,
                      "rectangles": rectangles}
DISTURBANCES = (*IMAGE_DISTURBANCES, "mixing")  # mixing needs the other data set's images


def disturbances(other_images, chosen=None):
    every = {**IMAGE_DISTURBANCES, "mixing": mixing(other_images)}
    return {name: every[name] for name in chosen or every}


def disturbed(x, disturb, level, seed=0):
    """The same random draws at every level (common random numbers)."""
    return disturb(x, level, np.random.default_rng(seed)).astype("float32")


def to_shape(images, shape):
    """Images resized (area) and converted to ``shape``'s channels, for mixing across data sets."""
    import tensorflow as tf

    resized = tf.image.resize(images, shape[:2], method="area").numpy()
    if shape[2] == 1 and resized.shape[-1] == 3:
        return resized.mean(axis=-1, keepdims=True)
    return np.repeat(resized, 3, axis=-1) if shape[2] == 3 and resized.shape[-1] == 1 else resized


# ---------------------------------------------------------------------------------- data and features


def prepare(root: str, name: str, overrides: list[str]) -> tuple[str, dict]:
    """The pipeline's own Ingest and Preprocess (cached on a second run): examples URI and schema."""
    subprocess.run([sys.executable, "-m", "ganpipe", "run", "--root", root, "--until", "Preprocess",
                    "--set", f"pipeline.name={name}", *overrides], check=True, stdout=subprocess.DEVNULL)
    latest = lambda output: max(glob.glob(os.path.join(root, name, "Preprocess", output, "*")),  # noqa: E731
                                key=lambda path: int(os.path.basename(path)))
    return latest("examples"), storage.read_json(os.path.join(latest("schema"), "schema.json"))


def feature_space(root: str, examples: str, schema: dict, name: str, **params):
    """The Classifier step's artifact for these data and parameters: (model, info, reference)."""
    out = os.path.join(root, "features", name)
    if not os.path.exists(os.path.join(out, reference.FILE)):
        classifier.build_feature_model(examples, schema, out, log=lambda *_: None, **params)
    return (*classifier.load_feature_model(out), reference.load(out))


def disturbance_table(label: str, examples: str, schema: dict, spaces: dict, other_images, chosen=None,
                      iid_holdout: bool = False) -> list[tuple]:
    """``iid_holdout``: the disturbed images are a random part of the train split and the reference
    the rest (for the photos, whose eval split is a strip of each photo, another distribution);
    otherwise the eval split against the Classifier's stored reference, as in Evaluate."""
    params = specs.EVALUATE.resolve_parameters({}, "evaluate")
    keras.utils.set_random_seed(params["seed"])  # tf.data's seeded shuffle also reads the global seed, as in Evaluate
    n, _ = samples.fold_sizes(schema, params["num_samples"], params["num_fakes"])
    if iid_holdout:
        train = samples.read_split(examples, schema, "train", schema["counts"]["train"], params, False)
        order = np.random.default_rng(params["seed"]).permutation(len(train.x))
        held_out, reference_x = train.take(order[:n]), train.x[order[n:]]
    else:
        held_out = samples.read_split(examples, schema, "eval", n, params, False)
    rows = []
    for space, (model, info, stored_reference) in spaces.items():
        extract = lambda x, model=model: samples.batched_call(model, [x], params["batch_size"])  # noqa: E731
        if iid_holdout:
            stored_reference = reference.with_statistics(extract(reference_x))
        setup = measure.make_setup(params, schema, info["feature_space"], extract, stored_reference, n)
        for name, disturb in disturbances(to_shape(other_images, held_out.x.shape[1:]), chosen).items():
            values = []
            for level in LEVELS:
                fakes = disturbed(held_out.x, disturb, level)
                values.append(measure.feature_metrics(setup, measure.Fold(fakes, held_out,
                                                                          measure.features_of(setup, fakes))))
            for key in REPORTED:
                series = [value[key] for value in values]
                sign = -1 if metrics.DIRECTIONS[key] == "higher" else 1
                rho = sign * scipy.stats.spearmanr(LEVELS, series).statistic
                rows.append((label, space, name, measure.rename(key, info["feature_space"]), rho, series))
                print(f"{label} | {space} | {name} | {rows[-1][3]} | {rho:.2f} | "
                      + " ".join(f"{v:.4g}" for v in series), flush=True)
    return rows


# ---------------------------------------------------------------------------------- checkpoints


def checkpoint_ranking(model_dir: str, examples: str, schema: dict, feature_dir: str) -> None:
    """Each checkpoint's EMA generator: Evaluate's main metric beside the large-sample reference."""
    from ganpipe.components import evaluate, train
    from ganpipe.components.train_args import TrainArgs
    from ganpipe.pipeline.config import load_config

    params = load_config().parameters["train"]
    reference_params = specs.EVALUATE.resolve_parameters({}, "evaluate")
    model, _ = classifier.load_feature_model(feature_dir)
    everything = samples.read_split(examples, schema, "train", schema["counts"]["train"], reference_params, False)
    real = samples.batched_call(model, [everything.x], 256)["features"]
    old_n = min(schema["counts"]["eval"], schema["counts"]["train"])  # the former estimator's sample size
    print(f"steps | Evaluate's main metric (wall time) | reference FCD (10,000 fakes vs all train) | "
          f"former FCD ({old_n} fakes vs {old_n} train) | CAS | copying share | membership AUCs")
    for path in sorted(glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index")),
                       key=lambda p: int(p.split("-")[-1].split(".")[0])):
        gan = train.build_gan(schema, TrainArgs.from_params(params))
        gan.checkpoint().restore(path[:-len(".index")]).expect_partial()
        steps = int(path.split("-")[-1].split(".")[0])
        out = os.path.join(os.path.dirname(feature_dir), "checkpoints", str(steps))
        os.makedirs(out, exist_ok=True)
        gan.generator.save(os.path.join(out, "generator.keras"))
        gan.ema_generator().save(os.path.join(out, "generator_ema.keras"))
        gan.discriminator.save(os.path.join(out, "discriminator.keras"))
        storage.write_json(os.path.join(out, "model.json"),
                           {"family": params["family"], "num_classes": schema["num_classes"], "steps": steps,
                            "latent_dim": params["latent_dim"], "data_kind": "image", "loss": params["loss"]})
        started, cpu_started = time.perf_counter(), time.process_time()
        report = evaluate.evaluate_model(out, examples, schema, feature_dir, os.path.join(out, "evaluation"),
                                         log=lambda *_: None)
        seconds = (time.perf_counter() - started, time.process_time() - cpu_started)
        labels = np.random.default_rng(0).integers(schema["num_classes"], size=REFERENCE_FAKES).astype("int32")
        latent = np.random.default_rng(1).standard_normal((REFERENCE_FAKES, params["latent_dim"])).astype("float32")
        fakes = samples.batched_call(gan.ema_generator(), [latent, labels], 256)
        fake = samples.batched_call(model, [fakes], 256)["features"]
        reference = metrics.compute(["frechet"], real, fake)["frechet_distance"]
        former = metrics.compute(["frechet"], real[:old_n], fake[:old_n])["frechet_distance"]
        print(f"{steps} | {checkpoint_line(report, seconds, reference, former)}", flush=True)
        keras.backend.clear_session()


def checkpoint_line(report: dict, seconds: tuple[float, float], reference_fcd: float, former_fcd: float) -> str:
    """One row: Evaluate's main metric and FCD (wall and CPU seconds of the whole Evaluate), the
    references, and the synthetic-data figures."""
    entries = report["metrics"]
    shown = lambda key: f"{entries[key]['value']:.4g} ± {entries[key]['std']:.2g}"  # noqa: E731
    main = report["main_metric"]
    beside = "" if main == "fcd" else f", fcd {shown('fcd')}"
    return (f"{main} {shown(main)}{beside} ({report['samples']['fakes']} fakes, "
            f"{seconds[0]:.0f} s wall, {seconds[1]:.0f} s CPU) | "
            f"{reference_fcd:.3f} | {former_fcd:.3f} | {shown('cas')} (real-trained {entries['cas']['baseline']:.3f}) | "
            f"{shown('copying_share')} | D {shown('membership_auc_d')}, distance {shown('membership_auc_distance')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="pipeline root for the data steps and the feature models")
    parser.add_argument("--model", help="a built-in run's Train model directory with checkpoints/")
    parser.add_argument("--data", nargs="*", choices=DATA, default=list(DATA),
                        help="data sets to disturb (none: only --model)")
    parser.add_argument("--disturbances", nargs="+", choices=DISTURBANCES, help="only these (default: all)")
    args = parser.parse_args()
    digits_examples, digits_schema = prepare(args.root, "evaluation_digits", [])
    photos_examples, photos_schema = prepare(args.root, "evaluation_photos", PHOTOS)
    unlabelled = {**digits_schema, "num_classes": 0, "label_names": []}
    read = lambda examples, schema: samples.read_split(  # noqa: E731
        examples, schema, "eval", schema["counts"]["eval"], specs.EVALUATE.resolve_parameters({}, "evaluate"), False).x
    digit_images, photo_images = read(digits_examples, digits_schema), read(photos_examples, photos_schema)
    print("data | features | disturbance | metric | rho | values at levels " + " ".join(map(str, LEVELS)))
    if "digits-labelled" in args.data:
        disturbance_table("digits, labelled", digits_examples, digits_schema,
                          {"classifier": feature_space(args.root, digits_examples, digits_schema, "digits")},
                          photo_images, args.disturbances)
    for label, examples, schema, other in (("digits-unlabelled", digits_examples, unlabelled, photo_images),
                                           ("photos", photos_examples, photos_schema, digit_images)):
        if label in args.data:
            spaces = {space: feature_space(args.root, examples, schema, f"{label}-{space}", unlabelled_features=space)
                      for space in ("contrastive", "pixels")}
            disturbance_table(label, examples, schema, spaces, other, args.disturbances, iid_holdout=label == "photos")
    if args.model:
        feature_space(args.root, digits_examples, digits_schema, "digits")  # the built-in run's Classifier
        checkpoint_ranking(args.model, digits_examples, digits_schema, os.path.join(args.root, "features", "digits"))


if __name__ == "__main__":
    main()
