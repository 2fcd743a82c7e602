"""Keras callbacks that watch a GAN while it trains: TensorBoard, checkpoints, the divergence guard.

Every callback counts in the GAN's own ``step`` variable (generator updates), never in
``optimizer.iterations``: ``LossScaleOptimizer`` does not advance its ``iterations``
(keras-team/keras#20878) and D's optimizer steps ``d_steps`` times per generator update.
With ``steps_per_execution`` > 1 Keras calls them once per execution, so an event due at step s
happens at the first execution boundary at or after s, and is recorded at that step.

After a resume from the checkpoint at step S, the events a killed attempt wrote after S are
stale (the resumed run writes them again). Every session starts with a ``SessionLog.START`` event
at S + 1, on which TensorBoard's Python loader drops all events of the run at steps >= S + 1 read
so far; RustBoard (``--load_fast``) ignores that event but drops, per tag, the points at steps >=
s when a point for step s arrives, which the resumed run's identical schedule provides. The
writer is flushed before every checkpoint, so nothing up to S can be lost with the attempt.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import time

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as custom_scalar_summary

from ganpipe.infra import faults, storage
from ganpipe.ganmodels import inner_optimizer
from ganpipe.ganmodels.srgan import bicubic_upscale

# Tag groups. TensorBoard's Time Series page sorts cards by the group before the first '/', so
# the training curves ("gan/") come first, the sample quality ("quality/", also Evaluate's) next,
# and the real-vs-real baselines and chart reference lines after them.
GAME, QUALITY, BASELINE, REFERENCE = "gan", "quality", "real_vs_real", "reference"
EQUILIBRIUM_ACCURACY = 0.5  # D's accuracy when it cannot tell real from fake
EQUILIBRIUM_VALUE = -math.log(4.0)  # V(D, G) at the game's equilibrium (D = 1/2 everywhere)
SAMPLE_GRID_SIZE = 64  # an 8 x 8 grid
SUPER_RESOLUTION_ROWS = 8  # rows of (bicubic, G's upscaling, real) in an SRGAN grid
# Offsets the fixed sample noise from every training draw (those use the seed's first word
# seed * 1009 + replica).
SAMPLE_NOISE_SEED = 0x5A3D_0001


def current_step(gan) -> int:
    return int(scalar_value(gan.step))


def scalar_value(variable) -> float:
    """A scalar variable's value, also for tf.distribute's mirrored variables."""
    return float(tf.convert_to_tensor(variable).numpy())


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first step whose d_loss or g_loss is NaN or infinite, or, checked
    before each checkpoint, whose weights, EMA weights or optimizer state are.

    The per-batch logs are running means, so the first non-finite step poisons them at once:
    checking them after every batch names exactly the step that diverged. A step can also end
    with finite losses but overflowed gradients; the state check keeps that out of checkpoints.
    """

    def __init__(self):
        super().__init__()
        self.diverged_at: int | None = None
        self.problem = ""

    def on_train_batch_end(self, batch, logs=None):
        bad = {name: float(logs[name]) for name in ("d_loss", "g_loss") if not math.isfinite(float(logs[name]))}
        if bad:
            self.stop(", ".join(f"{name}={value}" for name, value in bad.items()))

    def state_is_finite(self, gan) -> bool:
        bad = [variable.path for variable in training_state(gan)
               if not bool(tf.reduce_all(tf.math.is_finite(variable.value)))]
        if bad:
            self.stop(f"non-finite values in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}", gan)
        return not bad

    def stop(self, problem: str, gan=None):
        if self.diverged_at is None:
            gan = gan or self.model
            self.diverged_at, self.problem = current_step(gan), problem
            gan.stop_training = True


def training_state(gan) -> list:
    """The float variables a checkpoint saves: both networks, the EMA weights, both optimizers."""
    variables = [*gan.generator.weights, *gan.discriminator.weights, *gan.ema_weights,
                 *(variable for optimizer in optimizers(gan) for variable in optimizer.variables)]
    return [variable for variable in variables if "float" in str(variable.dtype)]


def games(gan) -> list:
    """The GANs that own optimizers: each pyramid level for LAPGAN, else the GAN itself."""
    return list(getattr(gan, "level_gans", None) or [gan])


def optimizers(gan) -> list:
    return [optimizer for game in games(gan) for optimizer in (game.d_optimizer, game.g_optimizer)]


def metric_trackers(gan) -> dict:
    """The GAN's trackers by metric name, plus each LAPGAN level's as ``level_<k>/<name>``."""
    trackers = dict(gan.trackers)
    for k, level in enumerate(getattr(gan, "level_gans", ())):
        trackers.update({f"level_{k}/{name}": tracker for name, tracker in level.trackers.items()})
    return trackers


class Checkpointer(keras.callbacks.Callback):
    """Saves ``manager`` every ``every`` generator steps unless the guard saw a non-finite loss;
    flushes ``writer`` first, so the events up to a checkpoint outlive a kill after it."""

    def __init__(self, manager: tf.train.CheckpointManager, every: int, guard: DivergenceGuard, writer=None):
        super().__init__()
        self.manager, self.every, self.guard, self.writer = manager, every, guard, writer
        self.next_save = None

    def on_train_begin(self, logs=None):
        self.next_save = (current_step(self.model) // self.every + 1) * self.every

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        if self.guard.diverged_at is None and step >= self.next_save and self.guard.state_is_finite(self.model):
            if self.writer is not None:
                self.writer.flush()
            self.manager.save(checkpoint_number=step)
            self.next_save = (step // self.every + 1) * self.every
            faults.point("Train:after-checkpoint")  # fault-injection tests kill mid-training here


# Shown in the progress output when the GAN's loss reports them (the metrics differ per loss).
PROGRESS_METRICS = ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake", "wasserstein_estimate")


class TensorBoardMonitor(keras.callbacks.Callback):
    """Writes the training run's TensorBoard summaries, all on the GAN's ``step``.

    - every ``log_every`` steps: the metrics as **means over the window since the previous log**
      (the GAN's trackers hold that window: cleared at the start of each window, saved in
      checkpoints and carried over Keras' reset at the start of ``fit``, so a resumed run logs
      and ends with the values of an uninterrupted one; LAPGAN's levels also as
      ``level_<k>/<name>``), D's and G's learning rates, the loss
      scales (float16) and real images per second; a progress line goes to ``log``;
    - every ``sample_every`` steps: the ``probe``'s image grids (see ``NoiseProbe`` and
      ``SuperResolutionProbe``) and histograms of D's raw outputs (logits) on its real and fake
      batches;
    - at the start of a run (not of a resume): the custom-scalars layout (``gan_layout``) and the
      Preprocess statistics; at the start of every session: ``SessionLog.START`` (module doc).

    Tags: ``gan/<metric>`` (LAPGAN levels ``gan/level_<k>/<metric>``), ``gan/samples``,
    ``gan/d_logits_real`` / ``gan/d_logits_fake``, ``reference/*`` (the equilibrium lines of the
    layout), ``learning_rate/*``, ``loss_scale/*``, ``images_per_second``. The hyper-parameters
    go to the pipeline run's one HParams trial (``ganpipe.pipeline.trial``), not here.
    """

    def __init__(self, writer, *, total_steps: int, log_every: int, sample_every: int, images_per_step: int,
                 probe, statistics: dict | None = None):
        super().__init__()
        self.writer = writer
        self.total_steps, self.log_every, self.sample_every = total_steps, log_every, sample_every
        self.images_per_step = images_per_step
        self.probe = probe
        self.statistics = statistics
        self.window_start = None
        self.last_means: dict[str, float] = {}
        self.carried: list = []
        self.window_done = False

    def on_train_begin(self, logs=None):
        step = current_step(self.model)
        # The window so far, as the checkpoint restored it (Keras clears the trackers next).
        self.carried = [(variable, value) for variable in tracker_variables(self.model)
                        if np.any(value := tf.convert_to_tensor(variable).numpy())]
        self.window_done = step > 0 and step % self.log_every == 0
        mark_session_start(self.writer, step + 1)
        if step == 0:
            with self.writer.as_default(step=0):
                tf.summary.experimental.write_raw_pb(gan_layout().SerializeToString(), step=0)
                if self.statistics is not None:
                    tf.summary.text("preprocess/statistics", "```\n" + json.dumps(self.statistics, indent=2) + "\n```")
            self.write_samples(0)
        self.writer.flush()
        self.next_log = (step // self.log_every + 1) * self.log_every
        self.next_sample = (step // self.sample_every + 1) * self.sample_every

    def on_epoch_begin(self, epoch, logs=None):
        for variable, value in self.carried:
            variable.assign(value)
        self.window_start = {"step": current_step(self.model), "time": time.perf_counter()}

    def on_train_batch_begin(self, batch, logs=None):
        if self.window_done:  # the trackers hold the window logged last: start the next one
            for tracker in metric_trackers(self.model).values():
                tracker.reset_state()
            self.window_done = False

    def on_train_batch_end(self, batch, logs=None):
        step = current_step(self.model)
        if step >= self.next_log:
            self.write_scalars(step)
            self.next_log = (step // self.log_every + 1) * self.log_every
        if step >= self.next_sample:
            self.write_samples(step)
            self.next_sample = (step // self.sample_every + 1) * self.sample_every

    def on_train_end(self, logs=None):
        if not self.window_done and window_means(self.model):
            self.write_scalars(current_step(self.model))
        self.writer.flush()

    def write_scalars(self, step: int):
        """The window's means and rates at ``step``; the trackers are cleared before the next step."""
        means = self.last_means = window_means(self.model)
        seconds = max(time.perf_counter() - self.window_start["time"], 1e-9)
        gan = self.model
        with self.writer.as_default(step=step):
            for name, value in means.items():
                tf.summary.scalar(f"{GAME}/{name}", value)
            tf.summary.scalar(f"{REFERENCE}/d_accuracy_equilibrium", EQUILIBRIUM_ACCURACY)
            tf.summary.scalar(f"{REFERENCE}/value_equilibrium", EQUILIBRIUM_VALUE)
            for network, optimizer in (("d", gan.d_optimizer), ("g", gan.g_optimizer)):
                tf.summary.scalar(f"learning_rate/{network}", scalar_value(inner_optimizer(optimizer).learning_rate))
                if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
                    tf.summary.scalar(f"loss_scale/{network}", scalar_value(optimizer.dynamic_scale))
            images_per_second = (step - self.window_start["step"]) * self.images_per_step / seconds
            tf.summary.scalar("images_per_second", images_per_second)
        self.window_start = {"step": step, "time": time.perf_counter()}
        self.window_done = True

    def write_samples(self, step: int):
        rendering = self.probe.render(self.model)
        with self.writer.as_default(step=step):
            for tag, grid in rendering.grids.items():
                tf.summary.image(f"{GAME}/{tag}", grid[np.newaxis])
            tf.summary.histogram(f"{GAME}/d_logits_real", rendering.real_logits)
            tf.summary.histogram(f"{GAME}/d_logits_fake", rendering.fake_logits)


class ProgressReporter(keras.callbacks.Callback):
    """Feeds a ``Progress`` (a live bar, or a plain line every tenth of the run) with the step and
    the compact metrics of the monitor's last window (those the GAN's loss reports)."""

    def __init__(self, progress, monitor: TensorBoardMonitor):
        super().__init__()
        self.progress, self.monitor = progress, monitor

    def on_train_batch_end(self, batch, logs=None):
        means = self.monitor.last_means
        self.progress.update(current_step(self.model), **{name: means[name] for name in PROGRESS_METRICS if name in means})


def gan_layout():
    """The custom-scalars dashboard for a GAN: D(x) against D(G(z)) and D's loss against G's on one
    chart each, D's accuracy with its 50% equilibrium line, V(D, G) with -log 4 (BCE losses), the
    Wasserstein estimate and hinge margins (those losses), and the sample
    quality with its real-vs-real baseline. Tags are regular expressions, so LAPGAN's per-level
    curves join the same charts."""
    def chart(title: str, *tags: str):
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(tags)))

    game = layout_pb2.Category(title="GAN game", chart=[
        chart("D(x) and D(G(z)): mean D output on real and generated samples",
              rf"^{GAME}/(level_\d+/)?d_real$", rf"^{GAME}/(level_\d+/)?d_fake$"),
        chart("losses of D and G", rf"^{GAME}/(level_\d+/)?d_loss$", rf"^{GAME}/(level_\d+/)?g_loss$"),
        chart("D accuracy (equilibrium 50%)", rf"^{GAME}/(level_\d+/)?d_accuracy$",
              rf"^{REFERENCE}/d_accuracy_equilibrium$"),
        chart("V(D, G) (equilibrium -log 4)", rf"^{GAME}/(level_\d+/)?value$", rf"^{REFERENCE}/value_equilibrium$"),
        # the losses without a BCE value function report these instead (ganmodels/losses.py)
        chart("Wasserstein estimate E[D(x)] - E[D(G(z))]", rf"^{GAME}/(level_\d+/)?wasserstein_estimate$"),
        chart("hinge: shares of samples inside the margin",
              rf"^{GAME}/(level_\d+/)?(real|fake)_inside_margin$"),
    ])
    quality = layout_pb2.Category(title="sample quality", chart=[
        chart("Fréchet distance (lower is better) and its real-vs-real baseline",
              rf"^{QUALITY}/(fcd|fid|fd)$", rf"^{BASELINE}/(fcd|fid|fd)$"),
        chart("precision and recall", rf"^{QUALITY}/(precision|recall)$"),
    ])
    return custom_scalar_summary.pb(layout_pb2.Layout(category=[game, quality]))


def mark_session_start(writer, step: int):
    """Writes a ``SessionLog.START`` event at ``step`` into ``writer``'s event file.

    tf.summary has no call for it; ``ImportEvent`` (what tf.contrib.summary.import_event was)
    writes a serialized Event through the writer's resource, into the same file and order.
    """
    event = event_pb2.Event(step=step, wall_time=time.time(),
                            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
    tf.raw_ops.ImportEvent(writer=writer._resource, event=event.SerializeToString())


def window_means(gan) -> dict[str, float]:
    """Each metric's mean over the current window (the steps its tracker has seen)."""
    means = {}
    for name, tracker in metric_trackers(gan).items():
        count = scalar_value(tracker.count)
        if count > 0:
            means[name] = scalar_value(tracker.total) / count
    return means


def tracker_variables(gan) -> list:
    return [variable for tracker in metric_trackers(gan).values() for variable in tracker.variables]


@dataclasses.dataclass
class Rendering:
    """What a probe shows of the model now: tag -> uint8 grid, D's logits on real and fake samples."""

    grids: dict[str, np.ndarray]
    real_logits: np.ndarray
    fake_logits: np.ndarray


class NoiseProbe:
    """Fixed inputs for GANs that generate from noise: a latent batch (labels cycling 0..C-1 for
    conditional GANs) rendered as the ``samples`` grid (and, for LAPGAN, every pyramid level's
    images as ``samples/level_<k>``, coarsest first), and a real batch (``real_condition``: its
    labels) for D's histograms."""

    def __init__(self, gan, real, real_condition=None):
        self.latent, self.labels = fixed_sample_inputs(gan)
        self.columns = grid_columns(gan)
        self.real, self.real_condition = real, real_condition

    def render(self, gan) -> Rendering:
        fakes = generate(gan, self.latent, self.labels)
        grids = {"samples": sample_grid(fakes, self.columns)}
        if hasattr(gan, "level_images"):
            for k, images in enumerate(gan.level_images(self.latent)):
                grids[f"samples/level_{k}"] = sample_grid(to_numpy(images), self.columns)
        n = min(len(fakes), len(self.real))
        fake_condition = None if self.labels is None else self.labels[:n]
        return Rendering(grids, logits(gan, self.real, self.real_condition), logits(gan, fakes[:n], fake_condition))


class SuperResolutionProbe:
    """Fixed (low-res, high-res) pairs for SRGAN: the ``samples`` grid has one row per pair,
    bicubic upscaling | G's upscaling | the real high-res image; D's histograms are on the real
    images and G's upscalings."""

    def __init__(self, gan, lowres, highres):
        self.lowres, self.highres = lowres[:SUPER_RESOLUTION_ROWS], highres[:SUPER_RESOLUTION_ROWS]
        self.bicubic = to_numpy(bicubic_upscale(self.lowres, gan.scale))

    def render(self, gan) -> Rendering:
        upscaled = generate(gan, None, self.lowres)
        rows = np.stack([self.bicubic, upscaled, to_numpy(self.highres)], axis=1)
        grid = sample_grid(rows.reshape(-1, *upscaled.shape[1:]), columns=3)
        return Rendering({"samples": grid}, logits(gan, self.highres), logits(gan, upscaled))


def logits(gan, samples, condition=None) -> np.ndarray:
    return to_numpy(gan.discriminate(tf.convert_to_tensor(samples), condition, training=False))


def to_numpy(tensor) -> np.ndarray:
    return keras.ops.convert_to_numpy(tensor).astype("float32")


def grid_columns(gan) -> int:
    """One column per class for conditional GANs (up to 16 classes), else 8."""
    classes = getattr(gan, "num_classes", 0)
    return classes if 2 <= classes <= 16 else 8


def fixed_sample_inputs(gan):
    """The same latent batch (and labels cycling 0..C-1 for conditional GANs) at every call."""
    columns = grid_columns(gan)
    n = columns * max(1, SAMPLE_GRID_SIZE // columns)
    latent = tf.random.stateless_normal((n, gan.latent_dim), seed=[SAMPLE_NOISE_SEED, gan.seed])
    classes = getattr(gan, "num_classes", 0)
    labels = tf.range(n, dtype="int32") % classes if classes else None
    return latent, labels


def generate(gan, latent, condition=None) -> np.ndarray:
    return to_numpy(gan.generate(latent, condition, training=False))


def sample_grid(samples: np.ndarray, columns: int = 8) -> np.ndarray:
    """uint8 [H, W, C] picture of samples in [-1, 1]: images tiled with a 1-pixel gap, or, for
    vectors (standardised), one 8-pixel-high row per sample with grey levels for -3..3 sigma."""
    if samples.ndim == 2:
        levels = np.clip((samples + 3.0) / 6.0, 0.0, 1.0)
        picture = np.repeat(np.repeat(levels, 8, axis=0), 8, axis=1)[..., np.newaxis]
        return (picture * 255).round().astype("uint8")
    n, height, width, channels = samples.shape
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (height + 1) + 1, columns * (width + 1) + 1, channels), "float32")
    for i, image in enumerate(samples):
        top, left = 1 + (i // columns) * (height + 1), 1 + (i % columns) * (width + 1)
        grid[top:top + height, left:left + width] = (np.clip(image, -1.0, 1.0) + 1.0) / 2.0
    return (grid * 255).round().astype("uint8")


def write_png(picture: np.ndarray, path: str, scale: int = 4) -> str:
    """Saves a uint8 [H, W, 1|3] picture enlarged ``scale`` times (nearest neighbour) at ``path``
    (a local path or a URI)."""
    image = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    png = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(png, format="PNG")
    storage.write_bytes(path, png.getvalue())
    return path
