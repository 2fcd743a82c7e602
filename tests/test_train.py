"""The Train component: artifact, TensorBoard tags and window means, checkpoints, exact resume after
SIGKILL, the divergence guard, MirroredStrategy over two logical CPUs, each precision."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator

from ganpipe import ganmodels
from ganpipe.components import monitoring, specs, train
from ganpipe.components.base import Artifact, ComponentError, ExecutionContext
from ganpipe.components.train_args import TrainArgs
from ganpipe.infra import fingerprints
from ganpipe.components.reader import make_dataset
from ganpipe.ganmodels.srgan import bicubic_upscale
from conftest import TINY_DCGAN, TINY_MLP, checkpoint_values, write_processed_examples  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("processed"))
    return root, write_processed_examples(root)


def read_events(logdir):
    accumulator = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def steps_of(accumulator, tag):
    return [event.step for event in accumulator.Tensors(tag)]


def plugin_of(accumulator, tag):
    return accumulator.SummaryMetadata(tag).plugin_data.plugin_name


# --------------------------------------------------------------------- the artifact


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """One run through the executor: 30 steps, logs every 10, samples every 15, checkpoints every 10."""
    root, _ = digits
    model_dir = str(tmp_path_factory.mktemp("model"))
    inputs = {"examples": Artifact("Examples", root), "schema": Artifact("Schema", root),
              "statistics": Artifact("Statistics", root)}
    outputs = {"model": Artifact("Model", model_dir)}
    params = train.COMPONENT.resolve_parameters({
        **TINY_DCGAN, "steps": 30, "log_every": 10, "sample_every": 15, "checkpoint_every": 10,
        "keep_checkpoints": 2, "ema_decay": 0.9})
    messages = []
    train.COMPONENT.execute(inputs, outputs, params, ExecutionContext("p", "Train", 1, log=messages.append))
    return outputs["model"], messages


def test_same_training_gives_the_same_fingerprint_whatever_ran_before(trained, digits, tmp_path):
    """Identical weights must give an identical semantic fingerprint, so that what follows Train
    stays a cache hit: layer names may not depend on the layers this process built before."""
    keras.layers.Flatten(), keras.layers.Conv2D(2, 3), keras.layers.Dense(2)  # e.g. a Classifier step ran
    model, _ = trained
    root, _ = digits
    again = Artifact("Model", str(tmp_path))
    params = train.COMPONENT.resolve_parameters({
        **TINY_DCGAN, "steps": 30, "log_every": 10, "sample_every": 15, "checkpoint_every": 10,
        "keep_checkpoints": 2, "ema_decay": 0.9})
    inputs = {name: Artifact(name.title(), root) for name in ("examples", "schema", "statistics")}
    train.COMPONENT.execute(inputs, {"model": again}, params, ExecutionContext("p", "Train", 2, log=lambda m: None))
    assert fingerprints.artifact_fingerprint(again.uri) == fingerprints.artifact_fingerprint(model.uri)


def test_model_artifact_files_and_model_json(trained):
    model, messages = trained
    info = model.read_json("model.json")
    assert info["steps"] == 30 and info["family"] == "dcgan" and info["data_shape"] == [16, 16, 1]
    assert info["data_kind"] == "image" and info["latent_dim"] == 8 and info["precision"] == "float32"
    assert set(info["final_metrics"]) == set(ganmodels.METRIC_NAMES)
    assert all(np.isfinite(list(info["final_metrics"].values())))
    assert info["sample_grid"] == "samples.png" and os.path.getsize(model.path(info["sample_grid"])) > 0
    assert model.properties["steps"] == 30 and model.properties["final_metrics"] == info["final_metrics"]
    generator = keras.models.load_model(model.path("generator.keras"))
    ema = keras.models.load_model(model.path("generator_ema.keras"))
    z = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    assert generator.predict(z, verbose=0).shape == (4, 16, 16, 1)
    assert not np.allclose(generator.predict(z, verbose=0), ema.predict(z, verbose=0))
    assert keras.models.load_model(model.path("discriminator.keras")).output_shape == (None, 1)
    checkpoints = tf.train.get_checkpoint_state(model.path("checkpoints")).all_model_checkpoint_paths
    assert [os.path.basename(path) for path in checkpoints] == ["ckpt-20", "ckpt-30"]
    assert any(message.startswith("step 30/30 (100%), d_loss ") and "ETA 0:00" in message for message in messages)


def test_tensorboard_tags_at_expected_steps(trained):
    model, _ = trained
    events = read_events(model.path("logs", "train"))
    for tag in (*(f"gan/{name}" for name in ganmodels.METRIC_NAMES), "learning_rate/d", "learning_rate/g",
                "images_per_second", "reference/d_accuracy_equilibrium", "reference/value_equilibrium"):
        assert steps_of(events, tag) == [10, 20, 30], tag
        assert plugin_of(events, tag) == "scalars"
    assert float(tf.make_ndarray(events.Tensors("reference/value_equilibrium")[0].tensor_proto)) == pytest.approx(
        -np.log(4.0))
    for tag, plugin in (("gan/samples", "images"), ("gan/d_logits_real", "histograms"),
                        ("gan/d_logits_fake", "histograms")):
        assert steps_of(events, tag) == [0, 15, 30], tag
        assert plugin_of(events, tag) == plugin
    grid = tf.make_ndarray(events.Tensors("gan/samples")[-1].tensor_proto)  # [width, height, png]
    assert tf.io.decode_png(grid[2]).shape == (8 * 17 + 1, 8 * 17 + 1, 1)
    assert steps_of(events, "preprocess/statistics") == [0] and plugin_of(events, "preprocess/statistics") == "text"
    statistics = tf.make_ndarray(events.Tensors("preprocess/statistics")[0].tensor_proto).item().decode()
    assert "pixel_mean" in statistics
    assert "_hparams_/session_start_info" not in events.Tags()["tensors"]  # the pipeline run's trial has them
    learning_rate = tf.make_ndarray(events.Tensors("learning_rate/g")[0].tensor_proto)
    assert learning_rate == pytest.approx(2e-4)


class PerStepValues(ganmodels.GAN):
    """Keeps each step's own d_loss (run eagerly)."""

    def record(self, stats):
        self.per_step.append(float(stats["d_loss"]))
        return super().record(stats)


def test_logged_scalars_are_means_over_the_window_since_the_last_log(tmp_path):
    keras.utils.set_random_seed(0)
    generator, discriminator = ganmodels.build_networks("mlp", (8,), latent_dim=4, hidden=(8,))
    gan = PerStepValues(generator, discriminator, 4)
    gan.per_step = []
    gan.compile(run_eagerly=True, jit_compile=False)
    real = tf.constant(np.random.default_rng(0).normal(size=(16, 8)).astype("float32"))
    writer = tf.summary.create_file_writer(str(tmp_path))
    monitor = monitoring.TensorBoardMonitor(writer, total_steps=12, log_every=4, sample_every=100, images_per_step=8,
                                            probe=monitoring.NoiseProbe(gan, real))
    data = tf.data.Dataset.from_tensor_slices(real).repeat().batch(8)
    gan.fit(data, epochs=1, steps_per_epoch=12, callbacks=[monitor], verbose=0)
    writer.close()
    logged = [float(tf.make_ndarray(e.tensor_proto)) for e in read_events(str(tmp_path)).Tensors("gan/d_loss")]
    windows = [np.mean(gan.per_step[i:i + 4]) for i in (0, 4, 8)]
    assert logged == pytest.approx(windows, rel=1e-6)
    assert not logged[2] == pytest.approx(np.mean(gan.per_step), rel=1e-3)  # not the running mean
    assert monitoring.window_means(gan)["d_loss"] == pytest.approx(windows[2], rel=1e-6)  # what model.json takes


# ------------------------------------------------------------------------- resume

RUN_TRAINING = textwrap.dedent("""
    import json, sys
    from ganpipe.components import train
    root, output_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with open(root + "/schema.json") as f:
        schema = json.load(f)
    train.train_model(root, schema, output_dir, **params)
""")


def test_kill_and_resume_matches_an_uninterrupted_run(digits, tmp_path):
    """SIGKILL after the first checkpoint, re-run on the same directory: the final checkpoint
    (both networks, both optimizers' slots, EMA weights, step) equals an uninterrupted run's.
    Tolerance: 1e-6 absolute; the same ops run on the same data and noise in the same order, so
    only oneDNN's choice of kernels between processes could make them differ, by rounding."""
    root, schema = digits
    params = {**TINY_DCGAN, "steps": 60, "checkpoint_every": 5, "log_every": 50, "sample_every": 1000,
              "ema_decay": 0.9, "keep_checkpoints": 2}
    interrupted = str(tmp_path / "interrupted")
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", RUN_TRAINING, root, interrupted, json.dumps(params)],
                                   env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
        index = os.path.join(interrupted, "checkpoints", "checkpoint")
        while not os.path.exists(index) and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-2000:]
    killed_at = train.checkpoint_step(tf.train.latest_checkpoint(os.path.join(interrupted, "checkpoints")))
    assert 5 <= killed_at < 60 and not os.path.exists(os.path.join(interrupted, "model.json"))

    messages = []
    resumed = train.train_model(root, schema, interrupted, log=messages.append, **params)
    assert any("resumed from" in message and f"at step {killed_at}" in message for message in messages)
    straight_dir = str(tmp_path / "straight")
    straight = train.train_model(root, schema, straight_dir, log=lambda message: None, **params)
    assert resumed["steps"] == straight["steps"] == 60

    after_resume = checkpoint_values(os.path.join(interrupted, "checkpoints"))
    uninterrupted = checkpoint_values(os.path.join(straight_dir, "checkpoints"))
    assert sorted(after_resume) == sorted(uninterrupted)
    assert any("ema_weights" in name for name in uninterrupted) and any("optimizer" in name for name in uninterrupted)
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(after_resume[name], value, rtol=0, atol=1e-6, err_msg=name)
    # The window of the last log spans the kill: its means come from the checkpointed trackers,
    # so model.json, and with it the Model fingerprint that downstream cache keys read, are equal.
    assert resumed["final_metrics"] == straight["final_metrics"]
    assert fingerprints.artifact_fingerprint(interrupted) == fingerprints.artifact_fingerprint(straight_dir)


def test_rerun_of_a_finished_run_trains_no_further(digits, tmp_path):
    root, schema = digits
    params = {**TINY_MLP, "steps": 4}
    first = train.train_model(root, schema, str(tmp_path), log=lambda message: None, **params)
    messages = []
    second = train.train_model(root, schema, str(tmp_path), log=messages.append, **params)
    assert first["steps"] == second["steps"] == 4
    assert not any("training" in message for message in messages)


# ------------------------------------------------------------------------ guards


def write_vector_examples(root, rows):
    """Processed vector examples (``features`` float_list, ``label`` -1) and their schema."""
    os.makedirs(os.path.join(root, "train"))
    with tf.io.TFRecordWriter(os.path.join(root, "train", "part-00000.tfrecord")) as writer:
        for row in rows:
            features = {"features": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    width = rows.shape[1]
    return {"kind": "vector", "shape": [width], "dtype": "float32", "channels": None, "num_classes": 0,
            "label_names": [], "lowres_shape": None, "counts": {"train": len(rows), "eval": 0},
            "feature_names": [f"x{i}" for i in range(width)],
            "normalization": {"mean": [0.0] * width, "std": [1.0] * width}}


def test_nan_loss_stops_at_the_step_that_saw_it_and_keeps_the_last_good_checkpoint(tmp_path):
    """One NaN row among 160 vectors: the step whose batch holds it is the step named."""
    rows = np.random.default_rng(0).normal(size=(160, 4)).astype("float32")
    rows[77, 2] = np.nan
    root = str(tmp_path / "data")
    schema = write_vector_examples(root, rows)
    params = {**TINY_MLP, "steps": 30, "checkpoint_every": 1}
    with pytest.raises(ComponentError, match=r"training diverged at step (\d+): d_loss=nan") as failure:
        train.train_model(root, schema, str(tmp_path / "model"), log=lambda message: None, **params)
    diverged_at = int(re.search(r"step (\d+)", str(failure.value)).group(1))

    keras.utils.set_random_seed(0)  # as train_model does before reading: the same order
    batches = make_dataset(root, schema, batch_size=16, seed=0, repeat=True).take(30)
    first_nan_batch = next(i for i, batch in enumerate(batches) if np.isnan(batch.numpy()).any())
    assert diverged_at == first_nan_batch + 1
    latest = tf.train.latest_checkpoint(str(tmp_path / "model" / "checkpoints"))
    assert (latest and train.checkpoint_step(latest)) == (first_nan_batch or None)
    assert not (tmp_path / "model" / "model.json").exists()


def test_overflowing_state_stops_before_it_reaches_a_checkpoint(digits, tmp_path):
    """Adam moves each of D's weights by ~lr per step: with lr=1e5 the gradients and Adam's second
    moments overflow within a few steps while the losses may still be finite."""
    root, schema = digits
    params = {**TINY_MLP, "steps": 50, "loss": "wasserstein", "d_steps": 1, "gradient_penalty": 1e-6,
              "d_learning_rate": 1e5, "checkpoint_every": 1}
    with pytest.raises(ComponentError, match=r"training diverged at step (\d+): ") as failure:
        train.train_model(root, schema, str(tmp_path), log=lambda message: None, **params)
    diverged_at = int(re.search(r"step (\d+)", str(failure.value)).group(1))
    assert 1 < diverged_at < 50
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert train.checkpoint_step(latest) == diverged_at - 1 and latest in str(failure.value)
    kept = checkpoint_values(str(tmp_path / "checkpoints"))
    assert all(np.isfinite(value).all() for value in kept.values() if np.asarray(value).dtype.kind == "f")
    assert not (tmp_path / "model.json").exists()


def test_bad_options_name_the_key(digits, tmp_path):
    root, schema = digits
    with pytest.raises(ValueError, match="train.precision"):
        train.train_model(root, schema, str(tmp_path), precision="float64")
    with pytest.raises(ValueError, match="train.network.l2: set train.d_l2 / train.g_l2 instead"):
        train.train_model(root, schema, str(tmp_path), network={"l2": 0.1})
    with pytest.raises(ValueError, match="train.network.depth: unknown key"):
        train.train_model(root, schema, str(tmp_path), family="dcgan", network={"depth": 3})


def test_batch_size_that_cannot_form_whole_packs_is_a_config_error():
    with pytest.raises(ValueError, match=r"train.batch_size=10 is not a multiple of train.packing=4: a pack would mix"):
        TrainArgs.from_params({"batch_size": 10, "packing": 4})
    assert TrainArgs.from_params({"batch_size": 12, "packing": 4}).game.packing == 4


def test_train_args_group_every_parameter_once_with_its_value():
    given = {"loss": "hinge", "g_beta_1": 0.1, "batch_size": 7, "log_every": 3, "keep_checkpoints": 9}
    args = TrainArgs.from_params(given)
    assert (args.game.loss, args.optimisers.g.beta_1, args.optimisers.d.beta_1) == ("hinge", 0.1, 0.5)
    assert (args.runtime.batch_size, args.monitoring.log_every, args.checkpointing.keep_checkpoints) == (7, 3, 9)
    assert set(args.game.gan_options()) == set(ganmodels.families.GAN_OPTIONS) | {"packing", "d_l1", "d_l2", "g_l1", "g_l2"}


def test_steps_win_over_epochs_and_epochs_count_global_batches():
    schema = {"counts": {"train": 1000}}
    resolve = lambda **given: train.resolve_steps(TrainArgs.from_params(given), schema)  # noqa: E731
    assert resolve() == specs.DEFAULT_STEPS
    assert resolve(epochs=2, batch_size=100, d_steps=2) == 10
    assert resolve(epochs=2, steps=7) == 7


def test_separate_l2_for_each_network(digits):
    _, schema = digits
    params = TrainArgs.from_params({**TINY_MLP, "d_l2": 0.5})
    gan = train.build_gan(schema, params)
    assert gan.discriminator.losses and not gan.generator.losses
    same_init = train.build_gan(schema, TrainArgs.from_params(TINY_MLP))
    for a, b in zip(gan.discriminator.weights, same_init.discriminator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_conditional_family_samples_one_column_per_class(digits, tmp_path):
    root, schema = digits
    info = train.train_model(root, schema, str(tmp_path), log=lambda message: None,
                             **{**TINY_DCGAN, "family": "cgan", "steps": 3, "log_every": 1})
    assert info["num_classes"] == 10
    grid = tf.io.decode_png(tf.io.read_file(os.path.join(str(tmp_path), info["sample_grid"])))
    assert grid.shape[1] == 4 * (10 * 17 + 1) and grid.shape[0] == 4 * (6 * 17 + 1)


def test_conditional_family_on_unlabelled_examples_says_what_to_do(digits):
    _, schema = digits
    unlabelled = {key: value for key, value in schema.items() if key != "num_classes"}
    params = TrainArgs.from_params({**TINY_DCGAN, "family": "cgan"})
    with pytest.raises(ComponentError, match="train.family=cgan needs examples labelled with 2 or more classes, "
                                             "these have 0: .* or set train.family=dcgan"):
        train.build_gan(unlabelled, params)
    with pytest.raises(ComponentError, match="these have 1: "):  # one class is no condition either
        train.build_gan({**schema, "num_classes": 1}, params)
    assert train.build_gan(schema, params).num_classes == 10


def test_wasserstein_loss_alone_takes_its_defaults(digits):
    _, schema = digits
    build = lambda **given: train.build_gan(schema, TrainArgs.from_params({**TINY_MLP, **given}))  # noqa: E731
    wgan = build(loss="wasserstein")
    assert (wgan.d_steps, wgan.gradient_penalty) == (5, 10.0)
    explicit = build(loss="wasserstein", d_steps=2, gradient_penalty=1.0)
    assert (explicit.d_steps, explicit.gradient_penalty) == (2, 1.0)
    with pytest.raises(ValueError, match="loss='wasserstein' needs a Lipschitz critic"):
        build(loss="wasserstein", gradient_penalty=0.0)
    plain = build()
    assert (plain.d_steps, plain.gradient_penalty) == (1, 0.0)
    with pytest.raises(ValueError, match="train.network.loss: set train.loss instead"):
        build(network={"hidden": [8], "loss": "hinge"})


# ------------------------------------------------------- other families through Train

TINY_LAPGAN = {"family": "lapgan", "network": {"levels": 3, "width": 8, "hidden": [16]}, "latent_dim": 9,
               "batch_size": 16}


def roll_back_to(checkpoint_dir, step):
    """Makes the checkpoint of ``step`` the latest, as if the run had been killed soon after it."""
    with open(os.path.join(checkpoint_dir, "checkpoint"), "w") as f:  # CheckpointState as a text proto
        f.write(f'model_checkpoint_path: "ckpt-{step}"\nall_model_checkpoint_paths: "ckpt-{step}"\n')


def test_lapgan_trains_logs_every_level_and_resumes_with_tensorboard_purged(digits, tmp_path):
    """A finished 6-step run, rolled back to its step-3 checkpoint and resumed: the final state
    equals the first run's (all levels' networks and optimizers), and TensorBoard, reading both
    attempts' event files, shows each step once (the resumed session's SessionLog.START at step 4
    purges the first attempt's steps 4..6)."""
    root, schema = digits
    params = {**TINY_LAPGAN, "steps": 6, "log_every": 3, "sample_every": 3, "checkpoint_every": 3,
              "statistics": {"train": {"count": schema["counts"]["train"]}}}
    first = train.train_model(root, schema, str(tmp_path), log=lambda message: None, **params)
    assert first["family"] == "lapgan" and set(ganmodels.METRIC_NAMES) <= set(first["final_metrics"])
    assert {"level_0/d_loss", "level_2/g_loss"} <= set(first["final_metrics"])
    level_means = [first["final_metrics"][f"level_{k}/d_loss"] for k in range(3)]
    assert first["final_metrics"]["d_loss"] == pytest.approx(np.mean(level_means), rel=1e-5)
    checkpoints = str(tmp_path / "checkpoints")
    finished = checkpoint_values(checkpoints)
    assert sum("optimizer" in name and "level" in name for name in finished) > 0

    roll_back_to(checkpoints, 3)
    os.remove(tmp_path / "model.json")
    messages = []
    resumed = train.train_model(root, schema, str(tmp_path), log=messages.append, **params)
    assert any("at step 3" in message for message in messages) and resumed["steps"] == 6
    after_resume = checkpoint_values(checkpoints)
    assert sorted(after_resume) == sorted(finished)
    for name, value in finished.items():
        np.testing.assert_allclose(after_resume[name], value, rtol=0, atol=1e-6, err_msg=name)

    logdir = str(tmp_path / "logs" / "train")
    assert len(tf.io.gfile.glob(os.path.join(logdir, "events.out.tfevents.*"))) == 2
    events = plugin_event_accumulator.EventAccumulator(logdir, size_guidance={plugin_event_accumulator.TENSORS: 0})
    events.Reload()
    for tag in ("gan/d_loss", "gan/level_0/d_loss", "gan/level_2/js_lower_bound", "learning_rate/g"):
        assert steps_of(events, tag) == [3, 6], tag
    for k, side in enumerate((4, 8, 16)):
        assert steps_of(events, f"gan/samples/level_{k}") == [0, 3, 6]
        grid = tf.io.decode_png(tf.make_ndarray(events.Tensors(f"gan/samples/level_{k}")[-1].tensor_proto)[2])
        assert grid.shape == (8 * (side + 1) + 1, 8 * (side + 1) + 1, 1)
    assert steps_of(events, "gan/d_logits_fake") == [0, 3, 6]
    assert steps_of(events, "preprocess/statistics") == [0]


def test_srgan_trains_on_lowres_pairs_and_shows_bicubic_srgan_real_rows(tmp_path):
    root = str(tmp_path / "data")
    schema = write_processed_examples(root, size=16, lowres_factor=2)
    params = {"family": "srgan", "batch_size": 8, "steps": 4, "log_every": 2, "sample_every": 2,
              "network": {"residual_blocks": 1, "filters": 8, "width": 8, "stages": 2, "dense_units": 16,
                          "pretrain_steps": 2}}
    info = train.train_model(root, schema, str(tmp_path / "model"), log=lambda message: None, **params)
    assert info["family"] == "srgan" and info["lowres_shape"] == [8, 8, 1] and info["latent_dim"] is None
    assert info["steps"] == 4 and set(info["final_metrics"]) == set(ganmodels.METRIC_NAMES)
    assert all(np.isfinite(list(info["final_metrics"].values())))
    generator = keras.models.load_model(str(tmp_path / "model" / "generator.keras"))
    assert generator.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0).shape == (2, 16, 16, 1)

    events = read_events(str(tmp_path / "model" / "logs" / "train"))
    assert steps_of(events, "gan/samples") == [0, 2, 4] and steps_of(events, "gan/d_logits_real") == [0, 2, 4]
    grid = tf.io.decode_png(tf.make_ndarray(events.Tensors("gan/samples")[-1].tensor_proto)[2]).numpy()
    assert grid.shape == (8 * 17 + 1, 3 * 17 + 1, 1)
    lowres, highres = next(iter(make_dataset(root, schema, split="eval", batch_size=8, shuffle=False,
                                             with_lowres=True)))
    tile = lambda row, column: grid[1 + 17 * row:17 * (row + 1), 1 + 17 * column:17 * (column + 1)]  # noqa: E731
    bicubic = np.clip(keras.ops.convert_to_numpy(bicubic_upscale(lowres, 2)), -1, 1)
    for row in (0, 7):
        np.testing.assert_allclose(tile(row, 0), np.round((bicubic[row] + 1) * 127.5), atol=1)
        np.testing.assert_array_equal(tile(row, 2), np.round((highres[row].numpy() + 1) * 127.5))


# --------------------------------------------------------------------- precisions


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_each_precision_trains_with_float32_variables(digits, tmp_path, precision):
    root, schema = digits
    info = train.train_model(root, schema, str(tmp_path), log=lambda message: None,
                             **{**TINY_DCGAN, "precision": precision, "steps": 2, "log_every": 1})
    assert info["steps"] == 2 and info["precision"] == precision
    assert all(np.isfinite(list(info["final_metrics"].values())))
    generator = keras.models.load_model(str(tmp_path / "generator.keras"))
    assert {variable.dtype for variable in generator.weights} == {"float32"}
    compute_dtypes = {layer.dtype_policy.compute_dtype for layer in generator.layers
                      if not isinstance(layer, keras.layers.InputLayer)}
    assert compute_dtypes == {"float32", precision.removeprefix("mixed_")}  # last layer stays float32
    assert keras.config.dtype_policy().name == "float32"  # restored after building
    events = read_events(str(tmp_path / "logs" / "train"))
    has_loss_scale = "loss_scale/d" in events.Tags()["tensors"]
    assert has_loss_scale == (precision == "mixed_float16")


# ------------------------------------------------------------------ distribution

MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from ganpipe import ganmodels
    from ganpipe.components import train

    root, output_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with open(root + "/schema.json") as f:
        schema = json.load(f)
    report = {"replicas": train.make_strategy("mirrored").num_replicas_in_sync}
    report["component"] = train.train_model(root, schema, output_dir, log=lambda message: None, **params)

    # One step with plain SGD (so a wrong loss scale changes the update) on the same 32 examples,
    # once on one device and once split 16 + 16 over two replicas. G's first kernel starts at zero:
    # the fakes then do not depend on the noise (which differs per replica by design), so every
    # update but that kernel's is noise-free and must agree.
    keras.utils.set_random_seed(1)
    real = np.random.default_rng(1).normal(size=(32, 6)).astype("float32")
    start = None

    def one_step(strategy):
        global start
        with strategy.scope():
            generator, discriminator = ganmodels.build_networks("mlp", (6,), latent_dim=4, hidden=(8,))
            if start is None:
                generator.layers[1].kernel.assign(np.zeros(generator.layers[1].kernel.shape, "float32"))
                start = [w.numpy() for w in generator.weights + discriminator.weights]
            for w, value in zip(generator.weights + discriminator.weights, start):
                w.assign(value)
            gan = ganmodels.GAN(generator, discriminator, 4, ema_decay=0.5)
            gan.compile(keras.optimizers.SGD(0.5), keras.optimizers.SGD(0.5))
        history = gan.fit(tf.data.Dataset.from_tensors(real), epochs=1, verbose=0)
        weights = [w.numpy() for w in generator.weights + discriminator.weights]
        ema = [w.numpy() for w in gan.ema_weights]
        return {"weights": weights, "ema": ema, "step": int(gan.step.numpy()),
                "d_loss": history.history["d_loss"][-1], "d_real": history.history["d_real"][-1]}

    single, mirrored = one_step(tf.distribute.get_strategy()), one_step(train.make_strategy("mirrored"))
    first_kernel = 0
    report["max_weight_difference"] = max(float(np.abs(a - b).max()) for i, (a, b) in
                                          enumerate(zip(single["weights"], mirrored["weights"])) if i != first_kernel)
    report["first_kernel_moved"] = bool(np.abs(mirrored["weights"][0]).max() > 0)
    # ema_decay 0.5, but the first step's warm-up decay is min(0.5, 1 / 10) = 0.1
    report["ema_error_after_one_step"] = max(
        float(np.abs(e - (0.1 * s + 0.9 * w)).max()) for e, s, w in zip(mirrored["ema"], start, mirrored["weights"]))
    report["largest_update"] = max(float(np.abs(w - s).max()) for w, s in zip(single["weights"], start))
    for key in ("step", "d_loss", "d_real"):
        report[key] = [single[key], mirrored[key]]
    print("REPORT" + json.dumps(report))
""")


def test_mirrored_strategy_over_two_logical_cpus_matches_one_device(digits, tmp_path):
    root, _ = digits
    params = {**TINY_MLP, "strategy": "mirrored", "steps": 6, "log_every": 3, "checkpoint_every": 3,
              "ema_decay": 0.9}
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
    result = subprocess.run([sys.executable, "-c", MIRRORED, root, str(tmp_path), json.dumps(params)],
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["replicas"] == 2
    component = report["component"]
    assert component["steps"] == 6 and all(np.isfinite(list(component["final_metrics"].values())))
    assert train.checkpoint_step(tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))) == 6
    assert report["step"] == [1, 1]
    # Losses averaged over the global batch: same update as one device on the whole batch. A missing
    # or doubled 1/replicas factor would change the SGD update by half of largest_update.
    assert report["largest_update"] > 1e-3
    assert report["max_weight_difference"] < 1e-5
    assert report["first_kernel_moved"]
    assert report["ema_error_after_one_step"] < 1e-6
    assert report["d_loss"][1] == pytest.approx(report["d_loss"][0], abs=1e-5)
    assert report["d_real"][1] == pytest.approx(report["d_real"][0], abs=1e-5)
