"""Train: fits a GAN family on the Preprocess outputs and writes a Model artifact.

The artifact (``outputs["model"].uri``)::

    generator.keras  discriminator.keras  generator_ema.keras (ema_decay set)
    checkpoints/     tf.train.CheckpointManager over GAN.checkpoint(): both networks, both
                     optimizers, EMA weights, the step counter (the noise is a function of it)
    logs/train/      TensorBoard (see monitoring.TensorBoardMonitor)
    generator_best.keras, best.json   with keep_best: the generator of the best quality-curve point
    samples.png      the final ``samples`` grid: 8 x 8 samples from the fixed monitoring noise
                     (SRGAN: rows of bicubic | SRGAN | real for 8 fixed eval images)
    model.json       what Evaluate/Export/the CLI need to use the model

Resumable: the runner keeps the staging directory of a killed attempt, and a re-run restores the
latest checkpoint and trains on to the same total number of steps. The data order is the reader's
seeded order with the consumed batches skipped, so an interrupted run ends with the weights of an
uninterrupted one.

Every family of the ``ganmodels`` registry trains here, built by ``ganmodels.build_gan``: noise
GANs (mlp, dcgan, lapgan) read images, ``cgan`` reads ``(images, labels)`` and ``srgan`` reads
``(lowres, highres)`` pairs (Preprocess's ``lowres_factor``).
"""
from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile

import keras
import tensorflow as tf

from ganpipe import ganmodels
from ganpipe.components import monitoring, preemption, privacy, quality, specs
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext, Progress
from ganpipe.components.train_args import TrainArgs
from ganpipe.components.trainer import Session, Trainer, is_conditional
from ganpipe.ganmodels.fast_loop import AUTO
from ganpipe.ganmodels.network_walk import batch_norm_layers
from ganpipe.ganmodels.srgan import SRGAN
from ganpipe.infra import storage

SAMPLES_FILE = "samples.png"  # the final sample grid, in the Model artifact


def run(inputs: dict[str, Artifact], outputs: dict[str, Artifact], params: dict, ctx: ExecutionContext) -> None:
    schema = inputs["schema"].read_json("schema.json")
    statistics = inputs["statistics"].read_json("statistics.json") if inputs.get("statistics") else None
    model = outputs["model"]
    classifier = inputs["classifier"].uri if inputs.get("classifier") else None
    info = train_model(inputs["examples"].uri, schema, model.uri, statistics=statistics, log=ctx.log,
                       progress=ctx.progress, classifier_dir=classifier, **params)
    if info:  # empty on multi-worker non-chief workers, which write no artifact
        model.properties.update(family=info["family"], steps=info["steps"], sample_grid=info["sample_grid"],
                                final_metrics=info["final_metrics"], **privacy.properties(info))


COMPONENT = specs.TRAIN


def train_model(examples_uri: str, schema: dict, output_dir: str, *, statistics: dict | None = None,
                log=print, progress=None, classifier_dir: str | None = None, **params) -> dict:
    """Trains (or resumes training) into ``output_dir``; returns what it wrote to model.json.

    ``params`` are this component's parameters (missing ones take their defaults), checked and
    grouped once into ``TrainArgs``. With a Classifier artifact (``classifier_dir``) the quality
    curve is measured (``quality.py``). Raises ComponentError if a loss turns NaN/Inf, keeping the
    last good checkpoint, and ``preemption.Preempted`` after saving a checkpoint on SIGTERM.

    Multi-worker: every worker is given the same ``output_dir`` (shared storage); all restore from
    its ``checkpoints/``, only the chief writes there, and only the chief writes the artifact.
    Non-chief workers save their (collective) checkpoints and logs to a temporary directory and
    return ``{}``.
    """
    args = TrainArgs.from_params(params)
    strategy = make_strategy(args.runtime.strategy)
    writes_here = strategy.extended.should_checkpoint
    work_dir = output_dir if writes_here else tempfile.mkdtemp(prefix="ganpipe-worker-")
    # Keras numbers auto-named layers per process (flatten, flatten_1...): without a fresh session
    # the saved networks, and so their fingerprints, would depend on what ran before in this
    # process (a Classifier step, or none when it was a cache hit). After the strategy, which must
    # come first for multi-worker collectives; outside its scope, which lives in the TF graph.
    keras.backend.clear_session()
    try:
        with op_determinism(args.runtime.deterministic):
            with strategy.scope():
                gan = build_gan(schema, args)
                gan.build_optimizers()
            synchronize_batch_norm(gan, args.runtime.sync_batch_norm, strategy.num_replicas_in_sync)
            if preemption.spans_workers(strategy):
                give_logs_a_batch_axis(gan)
            args = args.with_game(d_steps=gan.d_steps, gradient_penalty=gan.gradient_penalty)  # defaults resolved
            private = privacy.private_run(gan, examples_uri, schema, args, resolve_steps(args, schema), log)
            manager = tf.train.CheckpointManager(gan.checkpoint(), storage.join(work_dir, "checkpoints"),
                                                 max_to_keep=args.checkpointing.keep_checkpoints)
            restore_latest(gan, storage.join(output_dir, "checkpoints"), log)
            session = Session(strategy, manager, work_dir, examples_uri, schema, statistics, classifier_dir, log,
                              progress or functools.partial(Progress, log), private)
            probe = sample_probe(gan, examples_uri, schema)
            total_steps = private.steps if private else resolve_steps(args, schema)
            seconds, final_metrics = Trainer(gan, args, session).train(total_steps, probe)
            if not writes_here:
                return {}
            return write_model(gan, probe, schema, output_dir, args, seconds, final_metrics, log, private)
    finally:
        if not writes_here:
            shutil.rmtree(work_dir, ignore_errors=True)


def restore_latest(gan, checkpoint_dir: str, log) -> None:
    """Restores the newest checkpoint of ``checkpoint_dir`` (the chief's, for every worker)."""
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        gan.checkpoint().restore(latest).assert_existing_objects_matched()
        log(f"resumed from {latest} at step {monitoring.current_step(gan)}")


def checkpoint_step(path: str) -> int:
    return int(path.rsplit("-", 1)[1])

@functools.cache
def make_strategy(name: str) -> tf.distribute.Strategy:
    """``mirrored`` uses every GPU, or every logical CPU device when there is no GPU.
    ``multi_worker`` reads the cluster from ``TF_CONFIG`` and must be created before the process
    runs any TensorFlow op (``ganpipe run`` starts such a Train in its own process).

    One strategy object per name and process: two MirroredStrategy objects number their collective
    all-reduces independently, and the second one's first all-reduce then fails with a shape clash.
    """
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """TF op determinism while training (GPU kernels otherwise pick non-deterministic algorithms).
    TF has no public switch back; the private one restores the previous state for later steps."""
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            tf_config.disable_op_determinism()


def give_logs_a_batch_axis(gan) -> None:
    """Keras 3.15 averages a multi-worker step's logs with ``strategy.reduce(MEAN, axis=0)``, which
    fails on the scalar metrics a GAN returns ("Invalid reduction dimension 0", reported as
    tensorflow/tensorflow#72388); a length-1 axis reduces to the same scalar."""
    train_step = gan.train_step
    gan.train_step = lambda data: {name: tf.reshape(value, [1]) for name, value in train_step(data).items()}


def synchronize_batch_norm(gan, option: bool | None, replicas: int) -> None:
    """BatchNorm statistics over the global batch rather than each replica's share: on by default
    with more than one replica (Keras reads ``synchronized`` at call time)."""
    synchronized = replicas > 1 if option is None else option
    for network in (gan.generator, gan.discriminator):
        for layer in batch_norm_layers(network):
            layer.synchronized = synchronized


def build_gan(schema: dict, args: TrainArgs) -> ganmodels.GAN:
    """The family's GAN from ``ganmodels.build_gan`` under the requested dtype policy, compiled."""
    game, runtime = args.game, args.runtime
    if game.family == "cgan" and schema.get("num_classes", 0) < 2:  # e.g. the built-in run on other data
        raise ComponentError(f"train.family=cgan needs examples labelled with 2 or more classes, these have "
                             f"{schema.get('num_classes', 0)}: label them (images: one folder per class) or "
                             f"set train.family=dcgan")
    keras.utils.set_random_seed(game.seed)
    with dtype_policy(runtime.precision):
        gan = ganmodels.build_gan(
            game.family, schema["shape"], latent_dim=game.latent_dim, num_classes=schema.get("num_classes", 0),
            lowres_shape=schema.get("lowres_shape"), **game.network, **game.gan_options())
    jit_compile = AUTO if runtime.jit_compile is None else runtime.jit_compile  # fast_loop decides
    d, g = args.optimisers.d, args.optimisers.g
    gan.compile(d_optimizer=ganmodels.default_optimizer(d.learning_rate, d.beta_1, d.beta_2),
                g_optimizer=ganmodels.default_optimizer(g.learning_rate, g.beta_1, g.beta_2),
                jit_compile=jit_compile, steps_per_execution=runtime.steps_per_execution or 1)
    return gan


@contextlib.contextmanager
def dtype_policy(name: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_steps(args: TrainArgs, schema: dict) -> int:
    """Total generator steps; ``args.game.d_steps`` must be resolved (train_model takes the model's)."""
    runtime = args.runtime
    if runtime.steps is not None:
        return runtime.steps
    if runtime.epochs is None:
        return specs.DEFAULT_STEPS
    per_epoch = schema["counts"]["train"] // args.images_per_step
    if per_epoch == 0:
        raise ValueError(f"train.batch_size: {runtime.batch_size} x d_steps {args.game.d_steps} is more than "
                         f"the {schema['counts']['train']} training examples")
    return max(1, round(runtime.epochs * per_epoch))


def sample_probe(gan, examples_uri: str, schema: dict):
    """The monitor's fixed inputs. Noise GANs: the first train examples in file order (D's 'real'
    histogram). SRGAN: the first eval pairs (train pairs if there is no eval split)."""
    from ganpipe.components.reader import make_dataset

    if isinstance(gan, SRGAN):
        split = "eval" if schema["counts"].get("eval") else "train"
        pairs = make_dataset(examples_uri, schema, split=split, batch_size=monitoring.SUPER_RESOLUTION_ROWS,
                             shuffle=False, drop_remainder=False, cache=False, with_lowres=True)
        return monitoring.SuperResolutionProbe(gan, *next(iter(pairs)))
    conditional = is_conditional(gan)
    batches = make_dataset(examples_uri, schema, split="train", batch_size=monitoring.SAMPLE_GRID_SIZE,
                           shuffle=False, drop_remainder=False, cache=False, with_labels=conditional)
    batch = next(iter(batches))
    return monitoring.NoiseProbe(gan, *batch) if conditional else monitoring.NoiseProbe(gan, batch)


def write_model(gan, probe, schema: dict, output_dir: str, args: TrainArgs, seconds: float, final_metrics: dict,
                log, private=None) -> dict:
    """Final networks, the sample grid and model.json."""
    storage.makedirs(output_dir)  # Keras writes a .keras file into an existing directory
    gan.generator.save(storage.join(output_dir, "generator.keras"))
    gan.discriminator.save(storage.join(output_dir, "discriminator.keras"))
    if args.game.ema_decay is not None:
        # SRGAN's G needs low-resolution images to recompute BatchNorm statistics: the probe's
        gan.ema_generator(getattr(probe, "lowres", None)).save(storage.join(output_dir, "generator_ema.keras"))
    monitoring.write_png(probe.render(gan).grids["samples"], storage.join(output_dir, SAMPLES_FILE))
    info = {
        "family": args.game.family,
        "latent_dim": None if isinstance(gan, SRGAN) else args.game.latent_dim,  # SRGAN has no noise
        "num_classes": int(getattr(gan, "num_classes", 0)),
        "data_kind": schema["kind"],
        "data_shape": list(schema["shape"]),
        "lowres_shape": schema.get("lowres_shape"),
        "normalization": schema.get("normalization") if schema["kind"] == "vector" else None,
        "steps": monitoring.current_step(gan),
        "final_metrics": final_metrics,
        "loss": args.game.loss,
        "d_steps": args.game.d_steps,
        "precision": args.runtime.precision,
        "seed": args.game.seed,
        "ema": args.game.ema_decay is not None,
        "training_seconds": round(seconds, 1),
        "sample_grid": SAMPLES_FILE,  # relative to the artifact: right wherever it is published
        "best": quality.read_best(output_dir),  # keep_best: step, metric and value of generator_best.keras
        "privacy": private.describe(gan) if private else None,  # (epsilon, delta), what they cover
    }
    Artifact(type="Model", uri=output_dir).write_json("model.json", info)
    log(f"trained {info['steps']} steps" + (f", (epsilon {info['privacy']['epsilon']:.3g}, delta "
                                              f"{info['privacy']['delta']:.3g})" if private else ""))  # the run's summary names the published samples.png
    return info
