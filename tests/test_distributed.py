"""Past one machine: `ganpipe execute`, two real worker processes on loopback (TF_CONFIG), a worker
killed mid-run, SIGTERM, synchronised BatchNorm on two logical CPUs, and the local runner handing a
multi-worker Train to its own process.

Every worker and every baseline is a real process running real TensorFlow; final weights are
compared tensor by tensor from the checkpoints (networks, both optimizers, EMA, step).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from ganpipe.components import specs, train
from ganpipe.components.base import Component
from ganpipe.pipeline import cli, execute
from ganpipe.pipeline.dag import Node
from ganpipe.pipeline.metadata import COMPLETE
from ganpipe.pipeline.runner import LocalRunner
from test_train import TINY_DCGAN, checkpoint_values, write_processed_examples

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
# DCGAN (BatchNorm in G, so synchronised BatchNorm is on the path) with an EMA; long enough that a
# kill after the first checkpoint lands mid-run.
STEPS = 60
PARAMS = {**TINY_DCGAN, "steps": STEPS, "checkpoint_every": 5, "log_every": 10, "sample_every": 30,
          "ema_decay": 0.9}
# Two workers all-reduce gradients in another order than two replicas in one process; float32 sums
# of 8 x 8 values differ in the last bits, which 60 Adam steps amplify to about 1e-6.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("processed"))
    write_processed_examples(root)
    return root


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def execute_command(data, model_dir, params):
    return [sys.executable, "-m", "ganpipe.pipeline.cli", "execute", "--component", "Train",
            "--input", f"examples={data}", "--input", f"schema={data}", "--input", f"statistics={data}",
            "--output", f"model={model_dir}", "--params", json.dumps(params)]


def start_workers(data, model_dir, params, ports, logs):
    """One `ganpipe execute` per worker, all with the same command line and shared output dir."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(len(ports)):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(logs / f"worker{index}-{time.monotonic_ns()}.log", "w+")
        workers.append((subprocess.Popen(execute_command(data, model_dir, {**params, "strategy": "multi_worker"}),
                                         env={**ENVIRONMENT, "TF_CONFIG": tf_config}, stdout=log,
                                         stderr=subprocess.STDOUT), log))
    return workers


def finish(workers, timeout=420):
    """Exit codes and outputs of every worker."""
    results = []
    for process, log in workers:
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.seek(0)
        results.append((code, log.read()))
        log.close()
    return results


def wait_for(predicate, timeout=300, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoint_exists(model_dir):
    return lambda: tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) is not None


def assert_same_weights(actual, expected, tolerance):
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=0, atol=tolerance, err_msg=name)


def resumed_step(output):
    marker = "resumed from "
    assert marker in output, output[-3000:]
    return int(output.split(marker, 1)[1].split(" at step ", 1)[1].split()[0])


@pytest.fixture(scope="module")
def two_workers(data, tmp_path_factory):
    """An uninterrupted two-worker run: its final checkpoint and the workers' outputs."""
    model_dir = str(tmp_path_factory.mktemp("two_workers") / "model")
    started = time.monotonic()
    results = finish(start_workers(data, model_dir, PARAMS, free_ports(2), tmp_path_factory.mktemp("logs")))
    for code, output in results:
        assert code == 0, output[-3000:]
    return {"model_dir": model_dir, "weights": checkpoint_values(os.path.join(model_dir, "checkpoints")),
            "outputs": [output for _, output in results], "seconds": time.monotonic() - started}


MIRRORED_BASELINE = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ganpipe.components import train
    data, model_dir, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with open(data + "/schema.json") as f:
        schema = json.load(f)
    train.train_model(data, schema, model_dir, log=lambda message: None, **params)
""")


def test_two_workers_match_one_worker_over_the_same_global_batches(data, two_workers, tmp_path):
    """One process with two replicas sees the same global batches, split the same way, with the
    same per-replica noise: the two-worker run must end with its weights."""
    baseline = str(tmp_path / "model")
    result = subprocess.run([sys.executable, "-c", MIRRORED_BASELINE, data, baseline,
                             json.dumps({**PARAMS, "strategy": "mirrored"})],
                            env=ENVIRONMENT, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = checkpoint_values(os.path.join(baseline, "checkpoints"))
    assert_same_weights(two_workers["weights"], expected, TOLERANCE)
    assert int(two_workers["weights"]["gan/step/.ATTRIBUTES/VARIABLE_VALUE"]) == STEPS

    # Only the chief publishes: the artifact, and a record naming worker 0.
    model_dir = two_workers["model_dir"]
    assert sorted(os.listdir(model_dir)) == sorted(os.listdir(baseline))
    record = execute.read_record(model_dir + execute.RECORD_SUFFIX)
    assert record["state"] == execute.COMPLETE and record["task"] == {"type": "worker", "index": 0}
    assert record["outputs"]["model"]["properties"]["steps"] == STEPS
    assert "trained 60 steps" in two_workers["outputs"][0] and "trained" not in two_workers["outputs"][1]


def test_a_worker_killed_mid_run_then_both_restarted_resume_from_the_last_checkpoint(data, two_workers, tmp_path):
    model_dir = str(tmp_path / "model")
    first = start_workers(data, model_dir, PARAMS, free_ports(2), tmp_path)
    wait_for(checkpoint_exists(model_dir), what="the chief's first checkpoint")
    first[1][0].kill()
    first[0][0].kill()  # its next all-reduce would wait for the dead peer
    finish(first)
    killed_at = train.checkpoint_step(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    assert 0 < killed_at < STEPS

    results = finish(start_workers(data, model_dir, PARAMS, free_ports(2), tmp_path))
    for code, output in results:
        assert code == 0, output[-3000:]
    # Both workers restored the chief's checkpoint (the other one wrote none of its own there).
    assert {resumed_step(output) for _, output in results} == {killed_at}
    assert_same_weights(checkpoint_values(os.path.join(model_dir, "checkpoints")), two_workers["weights"], 1e-6)


def test_sigterm_to_one_worker_stops_both_at_one_step_and_a_rerun_finishes_the_same(data, two_workers, tmp_path):
    model_dir = str(tmp_path / "model")
    params = {**PARAMS, "checkpoint_every": 1000}  # the only checkpoint before the end is SIGTERM's
    workers = start_workers(data, model_dir, params, free_ports(2), tmp_path)
    wait_for(lambda: "training dcgan" in open(workers[1][1].name).read(), what="worker 1 to train")
    workers[1][0].send_signal(signal.SIGTERM)
    results = finish(workers)
    assert [code for code, _ in results] == [1, 1], results[0][1][-3000:]
    stopped = [int(output.split("stopped by SIGTERM at step ", 1)[1].split()[0]) for _, output in results]
    assert stopped[0] == stopped[1] and 0 < stopped[0] < STEPS
    assert train.checkpoint_step(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))) == stopped[0]
    assert execute.read_record(model_dir + execute.RECORD_SUFFIX)["state"] == execute.FAILED_RESUMABLE

    results = finish(start_workers(data, model_dir, params, free_ports(2), tmp_path))
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
    assert_same_weights(checkpoint_values(os.path.join(model_dir, "checkpoints")), two_workers["weights"], 1e-6)


def test_sigterm_during_train_saves_at_the_next_step_and_a_rerun_ends_with_uninterrupted_weights(data, tmp_path):
    params = {**PARAMS, "checkpoint_every": 1000, "steps": 200}
    uninterrupted = str(tmp_path / "uninterrupted")
    result = subprocess.run(execute_command(data, uninterrupted, params), env=ENVIRONMENT, capture_output=True,
                            text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-3000:]

    model_dir = str(tmp_path / "model")
    log = open(tmp_path / "first.log", "w+")
    process = subprocess.Popen(execute_command(data, model_dir, params), env=ENVIRONMENT, stdout=log,
                               stderr=subprocess.STDOUT)
    wait_for(lambda: "training dcgan" in open(log.name).read(), what="training to start")
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    (code, output), = finish([(process, log)])
    assert code == 1, output[-3000:]
    stopped = int(output.split("stopped by SIGTERM at step ", 1)[1].split()[0])
    assert 0 < stopped < params["steps"]
    assert train.checkpoint_step(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))) == stopped
    record = execute.read_record(model_dir + execute.RECORD_SUFFIX)
    assert record["state"] == execute.FAILED_RESUMABLE and "SIGTERM" in record["error"]
    assert not os.path.exists(os.path.join(model_dir, "model.json"))

    result = subprocess.run(execute_command(data, model_dir, params), env=ENVIRONMENT, capture_output=True,
                            text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-3000:]
    assert resumed_step(result.stdout) == stopped
    assert execute.read_record(model_dir + execute.RECORD_SUFFIX)["state"] == execute.COMPLETE
    assert_same_weights(checkpoint_values(os.path.join(model_dir, "checkpoints")),
                        checkpoint_values(os.path.join(uninterrupted, "checkpoints")), 0)


def test_checkpoint_every_seconds_adds_wall_clock_checkpoints_to_the_step_schedule(data, tmp_path, monkeypatch):
    """A clock that advances 0.6 s at each reading (not the machine's speed) makes a 1 s schedule
    save at step boundaries before the end; the step schedule (every 1000) alone saves only the final
    state. One step per execution: the clock is checked at execution boundaries."""
    from ganpipe.components import preemption

    readings = iter(range(1, 10**6))
    monkeypatch.setattr(preemption.time, "monotonic", lambda: 0.6 * next(readings))
    with open(os.path.join(data, "schema.json")) as f:
        schema = json.load(f)
    saved = {}
    for seconds in (None, 1.0):
        model_dir = str(tmp_path / f"every-{seconds}")
        train.train_model(data, schema, model_dir, log=lambda message: None,
                          **{**PARAMS, "steps": 8, "checkpoint_every": 1000, "keep_checkpoints": 100,
                             "checkpoint_every_seconds": seconds, "steps_per_execution": 1})
        state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
        saved[seconds] = [train.checkpoint_step(path) for path in state.all_model_checkpoint_paths]
    assert saved[None] == [8]
    assert saved[1.0][0] < 8 and saved[1.0][-1] == 8  # the clock saved before the end


SYNC_BATCH_NORM = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ganpipe import ganmodels
    from ganpipe.components import train

    # Half the batch far from the other half: per-replica statistics differ from the batch's.
    z = np.concatenate([np.random.default_rng(0).normal(0, 1, (8, 4)),
                        np.random.default_rng(1).normal(3, 2, (8, 4))]).astype("float32")

    def generator_on(strategy, option):
        with strategy.scope():
            gan = ganmodels.build_gan("dcgan", (16, 16, 1), latent_dim=4, width=8, seed=0)
        train.synchronize_batch_norm(gan, option, strategy.num_replicas_in_sync)
        for variable, value in zip(gan.generator.weights, START):
            variable.assign(value)
        def step(batch):
            return gan.generator(batch, training=True)
        batches = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(z))
        out = strategy.run(step, args=(next(iter(batches)),))
        out = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)])
        moving = [w.numpy() for w in gan.generator.weights if "moving_variance" in w.path]
        return out, moving

    single = tf.distribute.get_strategy()
    with single.scope():
        START = [w.numpy() for w in ganmodels.build_gan("dcgan", (16, 16, 1), latent_dim=4, width=8, seed=0).generator.weights]
    mirrored = train.make_strategy("mirrored")
    reference, reference_moving = generator_on(single, None)
    report = {"replicas": mirrored.num_replicas_in_sync}
    for name, option in (("default", None), ("off", False)):
        out, moving = generator_on(mirrored, option)
        report[name] = {"output": float(np.abs(out - reference).max()),
                        "moving_variance": max(float(np.abs(a - b).max()) for a, b in zip(moving, reference_moving))}
    print("REPORT" + json.dumps(report))
""")


def test_synchronised_batch_norm_on_two_replicas_uses_the_whole_batch_statistics():
    result = subprocess.run([sys.executable, "-c", SYNC_BATCH_NORM], env=ENVIRONMENT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["replicas"] == 2
    # On by default with two replicas: outputs and moving variances as one device on the batch.
    assert report["default"]["output"] < 1e-5 and report["default"]["moving_variance"] < 1e-5
    # Off: each replica normalises by its own half, visibly different.
    assert report["off"]["output"] > 1e-2 and report["off"]["moving_variance"] > 1e-3


def test_op_determinism_is_on_while_training_and_restored_after():
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    with train.op_determinism(True):
        assert tf_config.is_op_determinism_enabled()
    assert not tf_config.is_op_determinism_enabled()
    with train.op_determinism(False):
        assert not tf_config.is_op_determinism_enabled()


# ------------------------------------------------------------------ ganpipe execute, usage


@pytest.mark.parametrize("arguments, message", [
    (["--component", "Nope", "--output", "model=OUT"], "unknown component 'Nope'"),
    (["--component", "Train", "--input", "examples=DATA", "--output", "model=OUT"], "--input schema=URI"),
    (["--component", "Train", "--input", "examples=DATA", "--input", "schema=DATA"], "--output model=URI"),
    (["--component", "Train", "--input", "examples=DATA", "--input", "schema=DATA", "--input", "labels=DATA",
      "--output", "model=OUT"], "--input labels: Train has no such input"),
    (["--component", "Train", "--input", "examples=DATA/missing", "--input", "schema=DATA", "--output", "model=OUT"],
     "no such file or directory"),
    (["--component", "Train", "--input", "examples=DATA", "--input", "schema=DATA", "--output", "model=OUT",
      "--params", '{"steps": 0}'], "train.steps: 0 is below the minimum 1"),
    (["--component", "Train", "--input", "examples=DATA", "--input", "schema=DATA", "--output", "model=OUT",
      "--params", "[1]"], "expected a JSON object"),
    (["--component", "Train", "--input", "examples=DATA", "--input", "schema=DATA", "--output", "model=OUT",
      "--params", "@DATA/none.json"], "cannot read"),
    (["--component", "Train", "--input", "examples", "--output", "model=OUT"], "expected NAME=URI"),
])
def test_execute_usage_errors_exit_2_and_name_the_option(data, tmp_path, arguments, message):
    arguments = [a.replace("DATA", data).replace("OUT", str(tmp_path / "out")) for a in arguments]
    result = CliRunner().invoke(cli.main, ["execute", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not os.path.exists(tmp_path / "out")


def test_execute_failure_exits_1_with_a_failed_record(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli.main, ["execute", "--component", "Train", "--input", f"examples={data}",
                                           "--input", f"schema={empty}", "--output", f"model={tmp_path / 'model'}"])
    assert result.exit_code == 1, result.output
    record = execute.read_record(str(tmp_path / "model") + execute.RECORD_SUFFIX)
    assert record["state"] == execute.FAILED and "schema.json" in record["error"]
    assert record["inputs"]["schema"]["uri"] == str(empty)


# ------------------------------------------------------------------ ganpipe run, own process


def test_runner_gives_a_multi_worker_train_its_own_process_and_a_worker_joins_it(data, tmp_path, monkeypatch):
    """This process has run TF ops (other tests, and the line below): creating a multi-worker
    strategy here would fail, so the runner must start Train in a process of its own. The second
    worker runs `ganpipe worker` with the same config and root and trains the same step."""
    tf.constant(1.0) + 1.0
    source = Component("Source", {}, {"examples": "Examples", "schema": "Schema"}, (), write_source)
    nodes = [Node.of(source), Node("Train", specs.TRAIN, {"examples": "Source.examples", "schema": "Source.schema"})]
    train_section = {**TINY_DCGAN, "steps": 4, "log_every": 2, "sample_every": 4, "strategy": "multi_worker"}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(json.dumps({"pipeline": {"name": "p"}, "train": train_section}))
    root = str(tmp_path / "root")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    worker = subprocess.Popen([sys.executable, "-m", "ganpipe", "worker", str(config_file), "--root", root],
                              env={**ENVIRONMENT, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                           "task": {"type": "worker", "index": 1}})},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    lines = []
    result = LocalRunner(root, "p", nodes, {"train": train.COMPONENT.resolve_parameters(train_section)},
                         echo=lines.append).run()
    worker_output = worker.communicate(timeout=300)[0]
    assert result.state == COMPLETE, "\n".join(lines)[-3000:] + worker_output[-3000:]
    assert worker.returncode == 0, worker_output[-3000:]
    model = result.steps[1].outputs["model"]
    assert model.properties["steps"] == 4 and os.path.isfile(os.path.join(model.uri, "generator.keras"))
    assert "training dcgan (float32, multi_worker strategy) for steps 1..4" in worker_output
    assert "trained" not in worker_output  # the chief alone writes the model
    assert not os.path.exists(execute.handoff_path(root, "p", "Train"))
    assert os.listdir(execute.worker_scratch_root(root, "p")) == []  # the worker's scratch went with it

    # The chief's Train is a cache hit: a waiting worker, and one that starts later, exit 0 at once;
    # one given other parameters keeps waiting for a Train that is not this one.
    def worker_command(*overrides, timeout=300):
        return subprocess.Popen([sys.executable, "-m", "ganpipe", "worker", str(config_file), "--root", root,
                                 "--timeout", str(timeout), *overrides],
                                env={**ENVIRONMENT, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                             "task": {"type": "worker", "index": 1}})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    waiting = worker_command()
    again = LocalRunner(root, "p", nodes, {"train": train.COMPONENT.resolve_parameters(train_section)},
                        echo=lines.append).run()
    assert [step.status for step in again.steps] == ["cached", "cached"]
    late, other = worker_command(), worker_command("--set", "train.steps=5", timeout=2)
    for process in (waiting, late):
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 0, output[-3000:]
        assert f"Train is a cache hit on the chief (reuses execution {result.steps[1].execution_id})" in output
    output = other.communicate(timeout=120)[0]
    assert other.returncode == 1 and "did not start Train within 2 s" in output, output[-3000:]


def write_source(inputs, outputs, params, ctx):
    write_processed_examples(outputs["examples"].uri)
    shutil.copy(os.path.join(outputs["examples"].uri, "schema.json"), outputs["schema"].uri)
