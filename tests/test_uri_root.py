"""A whole pipeline on a non-local artifact root: TensorFlow's in-process ``ram://`` filesystem
(the data steps reach it through Beam, the TensorFlow side directly), with the metadata store on
a local directory. Any write that bypasses the filesystem layer either fails here or leaves a
local directory named ``ram:`` in the working directory, which the tests look for.

``ram://`` lives in this process only, so everything runs in-process (one worker)."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
import tensorflow as tf

from ganpipe.infra import fingerprints, storage
from ganpipe.pipeline import console, gc
from ganpipe.pipeline.config import load_config
from ganpipe.pipeline.metadata import DELETED, LIVE, MetadataStore
from ganpipe.pipeline.runner import LocalRunner
from ganpipe.pipeline.verify import verify

pytestmark = pytest.mark.slow

TINY = ["ingest.source=digits", "preprocess.image_size=8", "classifier.epochs=1", "classifier.width=4",
        "classifier.feature_dim=8", "train.family=mlp", "train.network={hidden: [16]}", "train.latent_dim=8",
        "train.steps=20", "train.batch_size=16", "train.checkpoint_every=4", "train.log_every=4",
        "train.sample_every=8", "train.eval_every=10", "train.eval_samples=40", "train.keep_best=true",
        "train.ema_decay=0.9", "evaluate.num_samples=40"]
TRAIN_FILES = ["generator.keras", "discriminator.keras", "generator_ema.keras", "generator_best.keras", "best.json",
               "samples.png", "model.json", "checkpoints/checkpoint"]


def make_runner(root: str, metadata: str, *overrides: str) -> LocalRunner:
    config = load_config(None, [f"pipeline.root={root}", f"pipeline.metadata={metadata}", *TINY, *overrides])
    return LocalRunner(config.root, config.name, config.nodes, config.parameters, echo=lambda line: None,
                       metadata=config.metadata)


def stray_entries(directory) -> list[str]:
    """What the run left in the working directory besides the metadata directory."""
    return sorted(name for name in os.listdir(directory) if name != "meta")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One complete run on ram://, started with a temporary working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        root = f"ram://{uuid.uuid4().hex}/runs"
        runner = make_runner(root, str(cwd / "meta"))
        result = runner.run()
        assert result.state == "COMPLETE", result.error
        yield {"root": root, "cwd": cwd, "metadata": str(cwd / "meta"), "runner": runner, "result": result,
               "outputs": {step.component: step.outputs for step in result.steps}}
    finally:
        os.chdir(previous)


def test_every_step_writes_its_outputs_on_the_uri_root(pipeline):
    root, outputs = pipeline["root"], pipeline["outputs"]
    assert [step.status for step in pipeline["result"].steps] == ["ran"] * 6
    for component, artifacts in outputs.items():
        for name, artifact in artifacts.items():
            assert artifact.uri.startswith(f"{root}/digits_cgan/{component}/{name}/"), artifact.uri
    model = outputs["Train"]["model"].uri
    for name in TRAIN_FILES:
        assert tf.io.gfile.exists(f"{model}/{name}"), name
    assert tf.io.gfile.glob(f"{model}/logs/train/events.out.tfevents.*")
    evaluation = outputs["Evaluate"]["evaluation"].uri
    for name in ["metrics.json", "samples.png"]:
        assert tf.io.gfile.exists(f"{evaluation}/{name}"), name
    assert tf.io.gfile.glob(f"{evaluation}/logs/eval/events.out.tfevents.*")
    assert tf.io.gfile.exists(outputs["Classifier"]["classifier"].uri + "/classifier.keras")
    assert storage.read_json(outputs["Evaluate"]["blessing"].uri + "/blessing.json")["blessed"] is True
    assert stray_entries(pipeline["cwd"]) == []


def test_training_logs_read_back_from_the_uri_root(pipeline):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(outputs_uri(pipeline, "Train", "model") + "/logs/train")
    logs.Reload()
    tags = logs.Tags()["tensors"]  # TF2 summaries are tensor events
    assert [event.step for event in logs.Tensors("quality/fcd")] == [10, 20]
    assert any("samples" in tag for tag in tags), tags


def test_the_run_summary_names_its_tensorboard_logs_on_the_uri_root(pipeline, capsys):
    """No symlinked view on a remote root: the summary gives TensorBoard a --logdir_spec naming
    each run's log directory, which TensorBoard's own parser reads back."""
    from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

    from ganpipe.pipeline.cli import _print_summary

    _print_summary(pipeline["result"], pipeline["root"], "digits_cgan", {})
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("TensorBoard:"))
    spec = line.split("--logdir_spec ", 1)[1]
    assert _parse_event_files_spec(spec) == {
        outputs_uri(pipeline, "Train", "model") + "/logs/train": "train",
        outputs_uri(pipeline, "Evaluate", "evaluation") + "/logs/eval": "eval",
        outputs_uri(pipeline, "Preprocess", "statistics") + "/logs": "preprocess"}


def test_the_served_model_loads_from_the_uri_root_and_generates(pipeline):
    pushed = pipeline["outputs"]["Export"]["pushed_model"]
    destination = pushed.properties["pushed_destination"]
    assert pushed.properties["pushed"] and destination == f"{pipeline['root']}/serving/digits_cgan/1"
    assert storage.read_json(f"{destination}/assets.extra/export.json")["model_fingerprint"] == \
        pipeline["outputs"]["Train"]["model"].fingerprint
    served = tf.saved_model.load(destination)
    first = served.signatures["generate"](num_samples=tf.constant(4), seed=tf.constant(7, tf.int64))["images"]
    again = served.signatures["generate"](num_samples=tf.constant(4), seed=tf.constant(7, tf.int64))["images"]
    assert first.shape == (4, 8, 8, 1) and first.dtype == tf.uint8
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert len(np.unique(first.numpy())) > 1
    assert storage.read_bytes(pushed.uri + "/README.md") == storage.read_bytes(f"{destination}/assets.extra/README.md")
    with MetadataStore(pipeline["metadata"], read_only=True) as store:  # `ganpipe lineage <URI>`
        assert store.artifact_at(f"{destination}/saved_model.pb").artifact.id == pushed.id
        model = pipeline["outputs"]["Train"]["model"]
        assert store.artifact_at(f"{model.uri}/generator.keras").artifact.id == model.id


def test_fingerprints_are_semantic_and_the_same_as_on_a_local_disk(pipeline, tmp_path):
    """One fingerprint function for every root: a local copy of the Train artifact (checkpoints
    and logs included) fingerprints the same; both leave out logs/ and checkpoints/."""
    model = pipeline["outputs"]["Train"]["model"]
    assert fingerprints.artifact_fingerprint(model.uri) == model.fingerprint
    copy = tmp_path / "model"
    for directory, _, files in storage.walk(model.uri):
        for name in files:
            relative = storage.join(directory, name)[len(model.uri) + 1:]
            storage.write_bytes(str(copy / relative), storage.read_bytes(storage.join(directory, name)))
    assert (copy / "logs" / "train").is_dir() and (copy / "checkpoints" / "checkpoint").is_file()
    assert fingerprints.artifact_fingerprint(str(copy)) == model.fingerprint
    storage.write_bytes(f"{model.uri}/logs/train/later.txt", b"a log line")
    assert fingerprints.artifact_fingerprint(model.uri) == model.fingerprint
    storage.delete([f"{model.uri}/logs/train/later.txt"])


def test_ganpipe_execute_reads_and_writes_uri_artifacts_and_records_beside_them(pipeline):
    """The single-step command (KFP's container step) with every artifact on the URI root: an
    Export of the served model, whose record is written beside its output."""
    from click.testing import CliRunner

    from ganpipe.pipeline import cli, execute

    output = f"{pipeline['root']}/execute/pushed_model"
    inputs = {"model": ("Train", "model"), "blessing": ("Evaluate", "blessing"), "schema": ("Preprocess", "schema")}
    arguments = ["execute", "--component", "Export", "--output", f"pushed_model={output}",
                 "--pipeline-name", "digits_cgan", "--pipeline-root", pipeline["root"]]
    for name, (component, produced) in inputs.items():
        arguments += ["--input", f"{name}={outputs_uri(pipeline, component, produced)}"]
    result = CliRunner().invoke(cli.main, arguments)
    assert result.exit_code == 0, result.output
    record = execute.read_record(output + execute.RECORD_SUFFIX)
    assert record["state"] == execute.COMPLETE and record["outputs"]["pushed_model"]["uri"] == output
    pushed = storage.read_json(f"{output}/pushed.json")
    assert pushed["already_served"] is True and pushed["version"] == 1
    assert stray_entries(pipeline["cwd"]) == []


def test_a_second_run_is_all_cache_hits(pipeline):
    again = pipeline["runner"].run()
    assert again.state == "COMPLETE", again.error
    assert [step.status for step in again.steps] == ["cached"] * 6
    assert {s.component: {n: a.uri for n, a in s.outputs.items()} for s in again.steps} == {
        component: {n: a.uri for n, a in artifacts.items()} for component, artifacts in pipeline["outputs"].items()}
    assert stray_entries(pipeline["cwd"]) == []


def test_verify_finds_a_changed_artifact_on_the_uri_root(pipeline):
    checked, problems = verify(pipeline["metadata"])
    assert checked == 9 and problems == []
    metrics = outputs_uri(pipeline, "Evaluate", "evaluation") + "/metrics.json"
    original = storage.read_bytes(metrics)
    report = storage.read_json(metrics)
    report["num_samples"] += 1
    storage.write_json(metrics, report)
    try:
        checked, problems = verify(pipeline["metadata"])
    finally:
        storage.write_bytes(metrics, original)
    assert [(p.path, p.problem) for p in problems] == [(storage.dirname(metrics), "fingerprint mismatch")]
    assert verify(pipeline["metadata"])[1] == []


def test_gc_on_the_uri_root_deletes_what_it_should_and_keeps_the_rest(pipeline):
    root, metadata, first = pipeline["root"], pipeline["metadata"], pipeline["outputs"]
    # Another model, blessed whatever its metric (so the first Blessing is no longer the newest).
    second = make_runner(root, metadata, "train.seed=1", "evaluate.no_worse_than_served=false").run()
    assert second.state == "COMPLETE", second.error
    newer = {step.component: step.outputs for step in second.steps}
    assert [s.status for s in second.steps] == ["cached"] * 3 + ["ran"] * 3
    assert newer["Export"]["pushed_model"].properties["version"] == 2
    stray = f"{root}/digits_cgan/Train/model/999"  # a crash between writing and recording
    incoming = f"{root}/serving/digits_cgan/.incoming-999-abcdef"  # a killed export
    unrelated = f"{root}/notes/readme.txt"
    for path in (f"{stray}/generator.keras", f"{incoming}/saved_model.pb", unrelated):
        storage.write_bytes(path, b"x")
    storage.delete([first["Export"]["pushed_model"].properties["pushed_destination"]])  # withdrawn: version 1

    removed = gc.collect_garbage(metadata)

    # the first run's line, its Blessing too (no blessing is a baseline any more); its PushedModel
    # stays: the second Evaluate measured it as the served model (verify says its version is gone)
    superseded = {outputs_uri(pipeline, c, o) for c, o in [("Train", "model"), ("Evaluate", "evaluation"),
                                                          ("Evaluate", "blessing")]}
    assert sorted(item.path for item in removed) == sorted(superseded | {stray, incoming})
    assert not any(storage.directory_exists(path) for path in superseded | {stray, incoming})
    with MetadataStore(metadata) as store:
        states = {record.artifact.uri: record.state for record in store.artifacts()}
    assert {uri for uri, state in states.items() if state == DELETED} == superseded
    kept = [a.uri for artifacts in newer.values() for a in artifacts.values()]
    kept.append(outputs_uri(pipeline, "Export", "pushed_model"))
    for uri in kept:
        assert states[uri] == LIVE and storage.directory_exists(uri), uri
    assert storage.exists(unrelated) and storage.directory_exists(f"{root}/serving/digits_cgan/2")
    withdrawn = first["Export"]["pushed_model"].properties["pushed_destination"]
    assert [(p.path, p.problem) for p in verify(metadata)[1]] == [(withdrawn, "served version missing")]
    assert gc.collect_garbage(metadata) == []
    assert stray_entries(pipeline["cwd"]) == []


def test_a_preempted_train_resumes_on_the_uri_root(pipeline):
    """SIGTERM mid-training (a preempted machine): Train saves a checkpoint and fails resumable;
    on a remote root its files stay under its execution id, and the next run copies them into
    its own outputs and trains on from that checkpoint, ending where an uninterrupted run ends."""
    longer = ["train.steps=400", "train.eval_every=100"]
    runner = make_runner(pipeline["root"], pipeline["metadata"], *longer)
    slot = f"{pipeline['root']}/digits_cgan/Train/model"
    before = set(storage.listdir(slot))
    stop = threading.Event()

    def preempt_at_the_first_checkpoint():
        while not stop.is_set():
            if any(storage.exists(f"{slot}/{name}/checkpoints/checkpoint") for name in set(storage.listdir(slot)) - before):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # never end pytest itself
    watcher = threading.Thread(target=preempt_at_the_first_checkpoint)
    watcher.start()
    try:
        killed = runner.run(until="Train")
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGTERM, previous)
    assert killed.state == "FAILED" and "stopped by SIGTERM" in killed.error, killed.error
    attempt = killed.steps[-1].execution_id

    # Our own handler on ganpipe's logger, not caplog: an in-process CLI test earlier in the session
    # configures that logger not to propagate to the root logger caplog listens on.
    logged, echoed = [], []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger(console.LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    runner.echo = echoed.append
    try:
        resumed = runner.run(until="Train")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert resumed.state == "COMPLETE", resumed.error
    model = resumed.steps[-1].outputs["model"]
    assert f"      continuing from the files of execution {attempt}" in echoed
    text = "\n".join(logged)
    resumed_at = int(text.split(f"resumed from {model.uri}/checkpoints/ckpt-", 1)[1].split(" ", 1)[0])
    assert 0 < resumed_at < 400 and storage.directory_exists(f"{slot}/{attempt}")
    assert storage.read_json(f"{model.uri}/model.json")["steps"] == 400

    uninterrupted = make_runner(pipeline["root"], pipeline["metadata"], *longer).run(until="Train", force=["Train"])
    assert uninterrupted.state == "COMPLETE", uninterrupted.error
    assert uninterrupted.steps[-1].outputs["model"].fingerprint == model.fingerprint
    assert stray_entries(pipeline["cwd"]) == []


def outputs_uri(pipeline, component: str, output: str) -> str:
    return pipeline["outputs"][component][output].uri
