"""A sample-quality curve while a GAN trains: every ``eval_every`` steps, the Fréchet distance,
precision and recall of ``eval_samples`` generated samples against as many real training
examples, in the Classifier's feature space (the space Evaluate measures in), written to the
training run's TensorBoard as ``quality/<fcd|fid|fd>``, ``quality/precision``, ``quality/recall``.

GAN losses say little about sample quality; this curve lets a user pick a checkpoint by quality.
With ``keep_best`` the generator of the best Fréchet distance so far is kept as
``generator_best.keras`` (with ``best.json``: its step and value), and survives a resume.

The samples are fewer than Evaluate's (Fréchet distance is biased upwards for small samples), so
the curve's level sits above Evaluate's figure; its shape is what it is for. The raw generator is
measured (not the EMA copy), from fixed noise, so points differ only by the weights.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ganpipe.components import monitoring
from ganpipe.infra import storage
from ganpipe.components.classifier import FEATURE_LAYER, load_feature_model
from ganpipe.components.reader import make_dataset
from ganpipe.components.train_args import TrainArgs
from ganpipe.ganmodels import metrics

BEST_GENERATOR, BEST_INFO = "generator_best.keras", "best.json"
QUALITY_NOISE_SEED = 0x5A3D_0002  # apart from training draws and the sample grid's noise
FRECHET_NAMES = {"classifier": "fcd", "inception": "fid", "contrastive": "fd", "pixels": "fd", "raw": "fd"}
BATCH = 256


class QualityCurve(keras.callbacks.Callback):
    """Measures the generator every ``every`` generator steps (see the module doc)."""

    def __init__(self, writer, feature_model, real_features: np.ndarray, frechet_name: str, every: int,
                 num_samples: int, best_dir: str | None, log=print):
        super().__init__()
        self.writer, self.feature_model, self.real = writer, feature_model, real_features
        self.frechet_name, self.every, self.num_samples = frechet_name, every, num_samples
        self.best_dir, self.log = best_dir, log
        self.best = read_best(best_dir)
        self.next_eval = None

    def on_train_begin(self, logs=None):
        self.next_eval = (monitoring.current_step(self.model) // self.every + 1) * self.every

    def on_train_batch_end(self, batch, logs=None):
        step = monitoring.current_step(self.model)
        if step >= self.next_eval:
            self.measure(step)
            self.next_eval = (step // self.every + 1) * self.every

    def measure(self, step: int) -> dict[str, float]:
        fakes = self.generate()
        fake_features = np.concatenate([np.asarray(self.feature_model(fakes[i:i + BATCH], training=False)[FEATURE_LAYER])
                                        for i in range(0, len(fakes), BATCH)])
        k = min(3, len(fake_features) - 1)
        values = metrics.compute(["frechet", "precision_recall"], self.real, fake_features,
                                 precision_recall={"k": k})
        frechet = values["frechet_distance"]
        with self.writer.as_default(step=step):
            tf.summary.scalar(f"{monitoring.QUALITY}/{self.frechet_name}", frechet)
            tf.summary.scalar(f"{monitoring.QUALITY}/precision", values["precision"])
            tf.summary.scalar(f"{monitoring.QUALITY}/recall", values["recall"])
        self.writer.flush()
        if self.best_dir is not None and np.isfinite(frechet) and (self.best is None or frechet < self.best["value"]):
            best = storage.join(self.best_dir, BEST_GENERATOR)
            storage.delete([best])  # TF's ram:// filesystem appends to a file opened for writing again
            self.model.generator.save(best)
            self.best = {"step": step, "metric": self.frechet_name, "value": float(frechet)}
            storage.write_json(storage.join(self.best_dir, BEST_INFO), self.best)
        self.log(f"step {step}: {self.frechet_name} {frechet:.4g}, precision {values['precision']:.3f}, "
                 f"recall {values['recall']:.3f} ({self.num_samples} samples)")
        return values

    def generate(self) -> np.ndarray:
        gan = self.model
        latent = tf.random.stateless_normal((self.num_samples, gan.latent_dim), seed=[QUALITY_NOISE_SEED, gan.seed])
        classes = getattr(gan, "num_classes", 0)
        labels = tf.range(self.num_samples, dtype="int32") % classes if classes else None
        return np.concatenate([monitoring.generate(gan, latent[i:i + BATCH], None if labels is None else labels[i:i + BATCH])
                               for i in range(0, self.num_samples, BATCH)])


def read_best(best_dir: str | None) -> dict | None:
    """The best point of an earlier attempt (a resume keeps comparing against it)."""
    path = storage.join(best_dir, BEST_INFO) if best_dir else None
    if path and storage.exists(path) and storage.exists(storage.join(best_dir, BEST_GENERATOR)):
        return storage.read_json(path)
    return None


def quality_curve(writer, classifier_dir: str | None, examples_uri: str, schema: dict, args: TrainArgs, gan,
                  work_dir: str, log=print) -> QualityCurve | None:
    """The callback, or None when ``eval_every`` is 0, no Classifier is wired in, or the family
    does not generate from noise (SRGAN upscales: Evaluate's PSNR/SSIM measure it)."""
    if not args.monitoring.eval_every or classifier_dir is None:
        return None
    if not getattr(gan, "latent_dim", 0):
        log("quality curve: not for a model without latent noise (srgan); Evaluate measures it")
        return None
    feature_model, info = load_feature_model(classifier_dir)
    count = min(args.monitoring.eval_samples, schema["counts"]["train"])
    real = next(iter(make_dataset(examples_uri, schema, split="train", batch_size=count, shuffle=True,
                                  seed=args.game.seed, drop_remainder=False, cache=False)))
    real_features = np.asarray(feature_model(real, training=False)[FEATURE_LAYER])
    return QualityCurve(writer, feature_model, real_features, FRECHET_NAMES[info["feature_space"]],
                        args.monitoring.eval_every, count, work_dir if args.monitoring.keep_best else None, log)
