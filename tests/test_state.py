"""Trustworthy pipeline state, each scenario with the real runner, store and gc:
cache keys that see every input and nothing else, the served model as a resolved input,
gc that keeps what matters, semantic fingerprints, the store's schema version, read-only use,
fsync before the commit and ``ganpipe verify``."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ganpipe.components import evaluate, specs
from ganpipe.infra import fingerprints
from ganpipe.components.base import Component, Parameter
from ganpipe.pipeline import cache, gc
from ganpipe.pipeline.cli import main
from ganpipe.pipeline.config import load_config
from ganpipe.pipeline.dag import Node
from ganpipe.pipeline.metadata import DELETED, LIVE, SCHEMA_VERSION, MetadataStore, StoreError
from ganpipe.pipeline.runner import LocalRunner
from ganpipe.pipeline.verify import verify

PIPELINE = "p"


# -- a toy model pipeline around the real blessing decision and the real resolver -----------------

def data(inputs, outputs, params, ctx):
    outputs["examples"].write_json("examples.json", {"n": 10})


def features(inputs, outputs, params, ctx):
    outputs["classifier"].write_json("classifier.json", {"space": "toy"})


def train(inputs, outputs, params, ctx):
    outputs["model"].write_json("model.json", {"fcd": params["fcd"]})


def evaluate_toy(inputs, outputs, params, ctx):
    """The real ``decide_blessing`` on a report whose FCD the toy model states, beside the served
    model's FCD (each side measured with a standard error of 0.5)."""
    fcd = inputs["model"].read_json("model.json")["fcd"]
    served = inputs.get("served")
    entry = {"value": fcd, "std": 0.5, "baseline": None, "baseline_std": None, "baseline_kind": None,
             "better": "lower"}
    if served:
        entry["served"] = {"value": served.properties["fcd"], "std": 0.5,
                           "difference": fcd - served.properties["fcd"], "difference_std": 0.7}
    report = {"feature_space": "classifier", "feature_space_id": "toy", "num_samples": 10, "main_metric": "fcd",
              "samples": {"folds": 10}, "model": {}, "metrics": {"fcd": entry},
              "served": served and {"version": served.properties["version"],
                                    "destination": served.properties["pushed_destination"], "model_fingerprint": None}}
    blessing = evaluate.decide_blessing(report, params)
    outputs["blessing"].write_json("blessing.json", blessing)
    outputs["blessing"].properties.update({key: blessing[key] for key in evaluate.BLESSING_PROPERTIES})


def push(inputs, outputs, params, ctx):
    """Pushes blessed models to <root>/serving/<pipeline>/<n> (n counting up), as Export does."""
    blessed = inputs["blessing"].read_json("blessing.json")["blessed"]
    outputs["pushed_model"].properties.update(pushed=blessed, fcd=inputs["model"].read_json("model.json")["fcd"])
    if blessed:
        serving = os.path.join(ctx.pipeline_root, "serving", PIPELINE)
        os.makedirs(serving, exist_ok=True)
        version = len(os.listdir(serving)) + 1
        destination = os.path.join(serving, str(version))
        os.makedirs(destination)
        outputs["pushed_model"].properties.update(pushed_destination=destination, version=version)


EVAL_PARAMETERS = tuple(p for p in specs.EVALUATE_PARAMETERS if p.name in (
    "num_samples", "main_metric", "no_worse_than_served", "no_worse_level", *dict.fromkeys(
        name for name, _, _ in evaluate.THRESHOLDS)))
MODEL_NODES = [
    Node.of(Component("Data", {}, {"examples": "Examples"}, (), data)),
    Node.of(Component("Features", {"examples": "Examples"}, {"classifier": "FeatureModel"}, (), features),
            {"examples": "Data.examples"}),
    Node.of(Component("Train", {"examples": "Examples"}, {"model": "Model"}, (Parameter("fcd", float, 10.0),), train),
            {"examples": "Data.examples"}),
    Node("Evaluate", Component("Evaluate", {"model": "Model", "examples": "Examples", "classifier": "FeatureModel",
                                            "served": "PushedModel"}, {"blessing": "Blessing"}, EVAL_PARAMETERS,
                               evaluate_toy, optional_inputs=("served",)),
         {"model": "Train.model", "examples": "Data.examples", "classifier": "Features.classifier"},
         resolved={"served": "ganpipe.pipeline.resolvers:served_model"}),
    Node.of(Component("Push", {"model": "Model", "blessing": "Blessing"}, {"pushed_model": "PushedModel"}, (), push),
            {"model": "Train.model", "blessing": "Evaluate.blessing"}),
]


def run_model(root, fcd):
    runner = LocalRunner(root, PIPELINE, MODEL_NODES, {"train": {"fcd": float(fcd)}}, echo=lambda line: None)
    result = runner.run()
    assert result.state == "COMPLETE", result.error
    return {step.component: step for step in result.steps}


def served(root):
    serving = os.path.join(root, "serving", PIPELINE)
    return sorted(int(name) for name in os.listdir(serving)) if os.path.isdir(serving) else []


def test_a_b_a_the_stale_blessing_is_not_exported(tmp_path):
    """A (FCD 30) blessed, B (FCD 10) blessed and pushed, then A again: Evaluate is no cache hit
    (the served model changed) and refuses A beside B, so nothing is pushed as a new version."""
    a = run_model(tmp_path, 30)
    assert a["Evaluate"].outputs["blessing"].properties["blessed"] is True
    b = run_model(tmp_path, 10)
    assert b["Evaluate"].outputs["blessing"].properties["blessed"] is True
    assert served(tmp_path) == [1, 2]
    assert {s.status for s in run_model(tmp_path, 10).values()} == {"cached"}  # B beside itself: no new input
    again = run_model(tmp_path, 30)
    assert again["Train"].status == "cached" and again["Evaluate"].status == "ran"
    blessing = again["Evaluate"].outputs["blessing"].read_json("blessing.json")
    assert blessing["blessed"] is False and "vs 10 of served version 2" in blessing["reasons"][0]
    assert blessing["served"]["version"] == 2
    assert again["Push"].outputs["pushed_model"].properties["pushed"] is False
    assert served(tmp_path) == [1, 2]
    assert {s.status for s in run_model(tmp_path, 30).values()} == {"cached"}
    with MetadataStore(str(tmp_path)) as store:  # the served model is in Evaluate's recorded inputs
        inputs = store.execution_artifacts(again["Evaluate"].execution_id, "input")
        assert inputs["served"].id == b["Push"].outputs["pushed_model"].id


def test_gc_keeps_what_the_next_comparison_measures(tmp_path):
    good = run_model(tmp_path, 10)
    run_model(tmp_path, 50)  # refused beside the served model
    gc.collect_garbage(str(tmp_path))
    pushed = good["Push"].outputs["pushed_model"]
    with MetadataStore(str(tmp_path)) as store:
        assert store.artifact(pushed.id).state == LIVE
    assert os.path.isdir(pushed.uri)
    worse = run_model(tmp_path, 40)  # 4x worse than the served model: still refused after gc
    assert worse["Evaluate"].outputs["blessing"].properties["blessed"] is False


def test_gc_keeps_the_lineage_of_every_served_version(tmp_path):
    first = run_model(tmp_path, 10)
    run_model(tmp_path, 9)  # version 2 supersedes every artifact of version 1 in its slot
    gc.collect_garbage(str(tmp_path))
    with MetadataStore(str(tmp_path)) as store:
        for step in ("Train", "Evaluate", "Push"):
            for artifact in first[step].outputs.values():
                assert store.artifact(artifact.id).state == LIVE and os.path.isdir(artifact.uri), step
    shutil.rmtree(os.path.join(tmp_path, "serving", PIPELINE, "1"))  # withdrawn: now it may go
    deleted = {item.artifact_id for item in gc.collect_garbage(str(tmp_path))}
    assert first["Train"].outputs["model"].id in deleted
    # its PushedModel stays, without its lineage: version 2's Evaluate was measured beside it
    assert first["Push"].outputs["pushed_model"].id not in deleted


def test_keep_last_and_older_than(tmp_path):
    steps = [run_model(tmp_path, fcd) for fcd in (10, 9.5, 9)]
    shutil.rmtree(os.path.join(tmp_path, "serving"))
    models = [s["Train"].outputs["model"].id for s in steps]
    assert gc.collect_garbage(str(tmp_path), dry_run=True, policy=gc.Policy(older_than=3600)) == []
    kept_two = gc.collect_garbage(str(tmp_path), dry_run=True, policy=gc.Policy(keep_last=2))
    assert models[0] in {g.artifact_id for g in kept_two} and models[1] not in {g.artifact_id for g in kept_two}
    assert gc.parse_age("2h") == 7200 and gc.parse_age("7d") == 7 * 86400
    with pytest.raises(ValueError, match="--older-than '3 days'"):
        gc.parse_age("3 days")
    result = CliRunner().invoke(main, ["gc", "--keep-last", "2", "--older-than", "0s", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with MetadataStore(str(tmp_path)) as store:
        assert [store.artifact(i).state for i in models] == [DELETED, LIVE, LIVE]


def test_gc_removes_stale_incoming_exports_and_unheld_locks(tmp_path):
    run_model(tmp_path, 10)
    stale = tmp_path / "serving" / PIPELINE / ".incoming-99-abc"
    stale.mkdir()
    lock = tmp_path / ".locks" / "run-dead.lock"
    lock.write_text("")
    removed = {item.path for item in gc.collect_garbage(str(tmp_path))}
    assert str(stale) in removed and not stale.exists() and not lock.exists()
    assert served(tmp_path) == [1]


# -- cache keys -------------------------------------------------------------------------------

def png(path, value):
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def ingest_key(source):
    params = specs.INGEST.resolve_parameters({"source": source})
    return cache.cache_key(specs.INGEST, params, {})


def test_ingest_key_sees_the_files_behind_the_source(tmp_path):
    images = tmp_path / "images" / "a"
    images.mkdir(parents=True)
    for i in range(3):
        png(images / f"{i}.png", i)
    source = f"images:{tmp_path / 'images'}"
    before = ingest_key(source)
    assert ingest_key(source) == before
    png(images / "3.png", 3)  # one more image
    added = ingest_key(source)
    assert added != before
    with open(images / "1.png", "r+b") as f:  # corrupted in place, same size
        f.seek(20)
        f.write(b"\0\0\0\0")
    assert ingest_key(source) != added


def test_ingest_really_reruns_when_an_image_is_added(tmp_path):
    images = tmp_path / "images"
    for label in ("a", "b"):
        (images / label).mkdir(parents=True)
        for i in range(3):
            png(images / label / f"{i}.png", 40 * i)
    nodes = [Node("Ingest", "ganpipe.components.specs:INGEST")]
    params = {"ingest": specs.INGEST.resolve_parameters({"source": f"images:{images}", "eval_fraction": 0.0})}

    def status():
        return LocalRunner(tmp_path / "root", PIPELINE, nodes, params, echo=lambda line: None).run().steps[0]

    first = status()
    assert first.status == "ran" and status().status == "cached"
    png(images / "b" / "9.png", 200)
    again = status()
    assert again.status == "ran" and again.outputs["examples"].fingerprint != first.outputs["examples"].fingerprint


def test_relative_paths_are_made_absolute_at_config_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["ingest.source=images:faces", "classifier.inception_weights=w/inception.h5",
                                "train.family=srgan", "train.network={width: 8, vgg_weights: vgg.h5}",
                                "ingest.tfds_data_dir=tfds"])
    assert config.parameters["ingest"]["source"] == f"images:{tmp_path / 'faces'}"
    assert config.parameters["classifier"]["inception_weights"] == str(tmp_path / "w" / "inception.h5")
    network = config.parameters["train"]["network"]  # vgg_weights is an srgan option
    assert (network["width"], network["vgg_weights"]) == (8, str(tmp_path / "vgg.h5"))
    assert config.parameters["ingest"]["tfds_data_dir"] == str(tmp_path / "tfds")
    assert load_config(None, ["ingest.source=tfds:mnist"]).parameters["ingest"]["source"] == "tfds:mnist"
    assert load_config(None, ["ingest.source=tfrecord:gs://b/x-*"]).parameters["ingest"]["source"] == \
        "tfrecord:gs://b/x-*"


def test_weight_files_tfds_data_and_versions_are_in_the_key(tmp_path):
    weights = tmp_path / "inception.h5"
    weights.write_bytes(b"weights v1")
    params = specs.CLASSIFIER.resolve_parameters({"inception_weights": str(weights)})
    before = cache.cache_key(specs.CLASSIFIER, params, {})
    weights.write_bytes(b"weights v2")
    assert cache.cache_key(specs.CLASSIFIER, params, {}) != before
    vgg = tmp_path / "vgg.h5"
    vgg.write_bytes(b"a")
    train = specs.TRAIN.resolve_parameters({"family": "srgan", "network": {"width": 8, "vgg_weights": str(vgg)}})
    before = cache.cache_key(specs.TRAIN, train, {})
    vgg.write_bytes(b"b")
    assert cache.cache_key(specs.TRAIN, train, {}) != before
    tfds_dir = tmp_path / "tfds" / "mnist" / "3.0.1"
    tfds_dir.mkdir(parents=True)
    ingest = specs.INGEST.resolve_parameters({"source": "tfds:mnist", "tfds_data_dir": str(tmp_path / "tfds")})
    before = cache.cache_key(specs.INGEST, ingest, {})
    (tmp_path / "tfds" / "mnist" / "3.0.2").mkdir()  # a new builder version prepared
    assert cache.cache_key(specs.INGEST, ingest, {}) != before
    material = cache.key_material(specs.INGEST, ingest, {})
    import apache_beam
    import PIL
    import sklearn
    import tensorflow
    assert material["versions"]["tensorflow"] == tensorflow.__version__
    assert material["versions"]["apache-beam"] == apache_beam.__version__
    assert material["versions"]["pillow"] == PIL.__version__
    assert material["versions"]["scikit-learn"] == sklearn.__version__
    assert material["versions"]["numpy"] == np.__version__
    assert cache.key_material(specs.TRAIN, train, {})["versions"]["keras"] == keras.__version__


def test_cadence_knobs_are_not_in_the_key():
    base = specs.TRAIN.resolve_parameters({})
    key = cache.cache_key(specs.TRAIN, base, {})
    for name, value in (("log_every", 7), ("sample_every", 9), ("checkpoint_every", 11), ("keep_checkpoints", 1)):
        assert cache.cache_key(specs.TRAIN, {**base, name: value}, {}) == key, name
    assert cache.cache_key(specs.TRAIN, {**base, "steps": 7}, {}) != key


def resumable(inputs, outputs, params, ctx):
    model = outputs["model"]
    attempts = len(os.listdir(model.uri))
    model.write_json(f"attempt-{attempts}.json", {"every": params["every"]})
    if os.environ.get("TOY_FAIL_FIRST") and attempts == 0:
        raise RuntimeError("killed mid-training")


def test_resume_state_survives_a_cadence_change(tmp_path, monkeypatch):
    component = Component("Fit", {}, {"model": "Model"}, (Parameter("every", int, 5, semantic=False),), resumable,
                          resumable=True)
    nodes = [Node.of(component)]
    monkeypatch.setenv("TOY_FAIL_FIRST", "1")
    assert LocalRunner(tmp_path, PIPELINE, nodes, {"fit": {"every": 5}}, echo=lambda line: None).run().state == "FAILED"
    done = LocalRunner(tmp_path, PIPELINE, nodes, {"fit": {"every": 50}}, echo=lambda line: None).run()
    assert sorted(os.listdir(done.steps[0].outputs["model"].uri)) == ["attempt-0.json", "attempt-1.json"]


# -- semantic fingerprints ------------------------------------------------------------------------

def test_model_fingerprint_ignores_logs_checkpoints_save_dates_and_durations(tmp_path):
    keras.utils.set_random_seed(0)
    network = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    def write(directory, seconds, event):
        os.makedirs(directory / "logs" / "train")
        os.makedirs(directory / "checkpoints")
        network.save(directory / "generator.keras")
        (directory / "model.json").write_text(json.dumps({"steps": 10, "training_seconds": seconds}))
        (directory / "logs" / "train" / "events.out").write_bytes(event)
        (directory / "checkpoints" / "checkpoint").write_text(f"timestamp {seconds}")
        return fingerprints.artifact_fingerprint(str(directory))

    first = write(tmp_path / "a", 12.5, b"wall 1")
    time.sleep(1.1)  # a later save date in the .keras metadata
    assert write(tmp_path / "b", 13.0, b"wall 2") == first
    network.layers[0].kernel.assign(network.layers[0].kernel + 1.0)
    assert write(tmp_path / "c", 12.5, b"wall 1") != first  # other weights
    (tmp_path / "a" / "model.json").write_text(json.dumps({"steps": 11, "training_seconds": 12.5}))
    assert fingerprints.artifact_fingerprint(str(tmp_path / "a")) != first



def test_artifact_fingerprint_sees_files_in_subdirectories_and_empty_directories(tmp_path):
    def tree(name):
        root = tmp_path / name
        (root / "sub" / "deeper").mkdir(parents=True)
        (root / "top.txt").write_text("top")
        (root / "sub" / "deeper" / "leaf.txt").write_text("leaf")
        return root

    def fingerprint(root):
        return fingerprints.artifact_fingerprint(str(root))

    first, second = tree("a"), tree("b")
    assert fingerprint(second) == fingerprint(first)
    (second / "sub" / "deeper" / "leaf.txt").write_text("LEAF")
    assert fingerprint(second) != fingerprint(first)
    (second / "sub" / "deeper" / "leaf.txt").write_text("leaf")
    (second / "sub" / "empty").mkdir()
    assert fingerprint(second) != fingerprint(first)
    os.rmdir(second / "sub" / "empty")
    os.rename(second / "sub" / "deeper", second / "sub" / "other")  # the same files under another name
    assert fingerprint(second) != fingerprint(first)


def test_fingerprint_reads_only_keras_and_json_files_semantically(tmp_path):
    """A zip that is not a .keras file counts by its bytes, metadata.json member included; JSON in
    a file not named .json keeps its durations; the old whole-tree scheme reads a .keras file's bytes."""
    def write(name, member_text, notes):
        root = tmp_path / name
        root.mkdir()
        for archive_name in ("data.zip", "model.keras"):
            with zipfile.ZipFile(root / archive_name, "w") as archive:
                archive.writestr("metadata.json", member_text)
        (root / "notes.txt").write_text(json.dumps(notes))
        return root

    first = write("a", '{"date_saved": "1"}', {"took_seconds": 1})
    fingerprint = fingerprints.artifact_fingerprint
    assert fingerprint(str(write("b", '{"date_saved": "2"}', {"took_seconds": 1}))) != fingerprint(str(first))
    assert fingerprint(str(write("c", '{"date_saved": "1"}', {"took_seconds": 2}))) != fingerprint(str(first))
    (first / "data.zip").unlink()
    (first / "notes.txt").unlink()
    whole_tree = fingerprint(str(first), fingerprints.WHOLE_TREE)
    with zipfile.ZipFile(first / "model.keras", "w") as archive:
        archive.writestr("metadata.json", '{"date_saved": "3"}')
    assert fingerprint(str(first), fingerprints.WHOLE_TREE) != whole_tree


def test_artifact_fingerprint_counts_a_symlink_by_its_target(tmp_path):
    for name, target in (("a", "data/one"), ("b", "data/one"), ("c", "data/two")):
        (tmp_path / name).mkdir()
        os.symlink(target, tmp_path / name / "link")
    fingerprint = {name: fingerprints.artifact_fingerprint(str(tmp_path / name)) for name in "abc"}
    assert fingerprint["a"] == fingerprint["b"] != fingerprint["c"]


def test_fingerprint_of_json_ignores_key_order_and_locations_but_not_values_or_plain_strings(tmp_path):
    def fingerprint(name, content, config=None):
        root = tmp_path / name
        root.mkdir()
        (root / "model.json").write_text(content)
        with zipfile.ZipFile(root / "generator.keras", "w") as archive:
            archive.writestr("config.json", config or '{"a": 1, "b": 2}')
        return fingerprints.artifact_fingerprint(str(root))

    first = fingerprint("a", '{"name": "dcgan", "values": [1, 2, "/runs/1/x", "gs://b/o"]}')
    assert fingerprint("b", '{"values": [1, 2, "/runs/2/x", "gs://c/o"], "name": "dcgan"}',
                       config='{"b": 2, "a": 1}') == first
    assert fingerprint("c", '{"name": "dcgan", "values": [1, 3, "/runs/1/x", "gs://b/o"]}') != first
    assert fingerprint("d", '{"name": "mlp", "values": [1, 2, "/runs/1/x", "gs://b/o"]}') != first


def test_the_fingerprint_of_a_tree_stays_what_stores_recorded(tmp_path):
    """Stores keep the fingerprints computed when artifacts were written and verify recomputes
    them: a change to what the scheme hashes must come with a new scheme number."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(b"\x00\x01" * 3)
    (tmp_path / "info.json").write_text('{"steps": 3, "took_seconds": 1.5}')
    assert fingerprints.artifact_fingerprint(str(tmp_path)) == "66a26ec4f52659771891f0271e355678f64b54d2e3ac62614aa93246f553f4c3"

# -- the store: schema version, read-only, fsync, verify ------------------------------------------

LEGACY_SCHEMA = """
CREATE TABLE pipelines (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE runs (id INTEGER PRIMARY KEY, pipeline_id INTEGER NOT NULL REFERENCES pipelines(id),
    state TEXT NOT NULL, config TEXT NOT NULL, lock TEXT NOT NULL, started REAL NOT NULL, ended REAL, error TEXT);
CREATE TABLE executions (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),
    component TEXT NOT NULL, state TEXT NOT NULL, parameters TEXT NOT NULL, cache_key TEXT NOT NULL,
    code_fingerprint TEXT NOT NULL, cached_from INTEGER REFERENCES executions(id), started REAL NOT NULL,
    ended REAL, error TEXT);
CREATE TABLE artifacts (id INTEGER PRIMARY KEY, type TEXT NOT NULL, uri TEXT NOT NULL, fingerprint TEXT NOT NULL,
    properties TEXT NOT NULL, state TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE events (execution_id INTEGER NOT NULL REFERENCES executions(id),
    artifact_id INTEGER NOT NULL REFERENCES artifacts(id), kind TEXT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (execution_id, kind, name));
"""


def test_a_store_from_before_schema_versions_is_migrated_and_verified_the_old_way(tmp_path):
    artifact = tmp_path / "p" / "Make" / "out" / "1"
    (artifact / "logs").mkdir(parents=True)
    (artifact / "logs" / "events").write_text("x")
    old_fingerprint = fingerprints.artifact_fingerprint(str(artifact), fingerprints.WHOLE_TREE)
    with sqlite3.connect(tmp_path / "metadata.sqlite") as db:
        db.executescript(LEGACY_SCHEMA)
        db.execute("INSERT INTO pipelines VALUES (1, 'p', 0)")
        db.execute("INSERT INTO runs VALUES (1, 1, 'COMPLETE', '{}', 'run-x.lock', 0, 1, NULL)")
        db.execute("INSERT INTO executions VALUES (1, 1, 'Make', 'COMPLETE', '{}', 'k', 'c', NULL, 0, 1, NULL)")
        db.execute("INSERT INTO artifacts VALUES (1, 'Numbers', ?, ?, '{}', 'LIVE', 0)", (str(artifact), old_fingerprint))
        db.execute("INSERT INTO events VALUES (1, 1, 'output', 'out')")
    assert verify(str(tmp_path)) == (1, [])  # read-only on the old layout
    with MetadataStore(str(tmp_path)) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.artifact(1).scheme == fingerprints.WHOLE_TREE
    with sqlite3.connect(tmp_path / "metadata.sqlite") as db:  # the columns new records are written with
        assert {"fingerprint_scheme", "manifest"} <= {row[1] for row in db.execute("PRAGMA table_info(artifacts)")}
    assert verify(str(tmp_path)) == (1, [])
    (artifact / "logs" / "events").write_text("y")  # the old scheme hashed logs too
    assert [p.problem for p in verify(str(tmp_path))[1]] == ["fingerprint mismatch"]
    with sqlite3.connect(tmp_path / "metadata.sqlite") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer ganpipe"):
        MetadataStore(str(tmp_path))


def test_verify_reports_changed_and_missing_artifacts(tmp_path):
    steps = run_model(tmp_path, 10)
    result = CliRunner().invoke(main, ["verify", "--root", str(tmp_path)])
    assert result.exit_code == 0 and "0 problem(s)" in result.output
    model = steps["Train"].outputs["model"]
    with open(model.path("model.json")) as f:
        text = f.read()
    with open(model.path("model.json"), "w") as f:
        f.write(text.replace("10.0", "11.0"))  # same size: only the fingerprint tells
    shutil.rmtree(steps["Data"].outputs["examples"].uri)
    shutil.rmtree(os.path.join(tmp_path, "serving", PIPELINE, "1"))
    result = CliRunner().invoke(main, ["verify", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert f"fingerprint mismatch: artifact {model.id} {model.uri}" in result.output
    assert f"missing: artifact {steps['Data'].outputs['examples'].id}" in result.output
    assert f"served version missing: artifact {steps['Push'].outputs['pushed_model'].id}" in result.output


def test_a_missing_served_version_makes_the_push_a_cache_miss(tmp_path):
    run_model(tmp_path, 10)
    assert run_model(tmp_path, 10)["Push"].status == "cached"
    shutil.rmtree(os.path.join(tmp_path, "serving", PIPELINE, "1"))
    assert run_model(tmp_path, 10)["Push"].status == "ran"


def test_outputs_are_fsynced_before_the_metadata_commit(tmp_path, monkeypatch):
    synced, order = set(), []
    real_fsync, real_commit = os.fsync, MetadataStore.complete_execution

    def fsync(fd):  # by inode: files are synced in staging, then renamed
        synced.add(os.fstat(fd).st_ino)
        return real_fsync(fd)

    def complete(store, execution_id, outputs, manifests):
        for artifact in outputs.values():
            paths = [os.path.join(d, f) for d, subdirs, names in os.walk(artifact.uri) for f in names + subdirs]
            paths += [artifact.uri, os.path.dirname(artifact.uri)]  # the rename's directory entry too
            order.append(all(os.stat(p).st_ino in synced for p in paths))
        return real_commit(store, execution_id, outputs, manifests)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(MetadataStore, "complete_execution", complete)
    run_model(tmp_path, 10)
    assert order and all(order)


def test_read_only_commands_never_write_the_store(tmp_path):
    run_model(tmp_path, 10)
    with MetadataStore(str(tmp_path)) as store:  # a run whose process is gone, still RUNNING
        store.start_run(PIPELINE, {}, "run-gone.lock")
    store_file = tmp_path / "metadata.sqlite"
    before = store_file.read_bytes()
    for command in (["runs"], ["show", "2"], ["lineage", "1"], ["verify"]):
        result = CliRunner().invoke(main, [*command, "--root", str(tmp_path)])
        assert result.exit_code == 0, result.output
    assert "ABANDONED" in CliRunner().invoke(main, ["runs", "--root", str(tmp_path)]).output
    assert store_file.read_bytes() == before
    with MetadataStore(str(tmp_path), read_only=True) as store:
        assert store.run(2).state == "RUNNING"  # shown ABANDONED, not marked


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a read-only bind mount")
def test_read_only_commands_work_on_a_read_only_root(tmp_path):
    run_model(tmp_path, 10)
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no permission to make a mount namespace")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commands = " && ".join(f"{sys.executable} -m ganpipe.pipeline.cli {c} --root {tmp_path}"
                           for c in ("runs", "show 1", "verify", "gc --dry-run"))
    script = (f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path} && "
              f"! touch {tmp_path}/probe 2>/dev/null && {commands}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.path.dirname(__file__)])})
    assert done.returncode == 0, done.stderr
    assert "COMPLETE" in done.stdout and "0 problem(s)" in done.stdout and "would be freed" in done.stdout
