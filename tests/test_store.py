"""The metadata store and the artifacts it records, through the runner and the CLI: a cache hit
hands on only whole artifacts (manifests), a damaged store is one line and exit 2 from every
command, a store that records nothing is refused beside another store's artifacts, the store
keeps its references whole (foreign keys), and ``gc --dry-run`` writes nothing."""
import os
import shutil
import sqlite3
import threading
import time

import pytest
from click.testing import CliRunner

from ganpipe.components.base import Artifact, Component, Parameter
from ganpipe.pipeline import gc, layout
from ganpipe.pipeline.cli import main
from ganpipe.pipeline.dag import Node
from ganpipe.pipeline.metadata import MetadataStore, StoreError
from ganpipe.pipeline.plan import dry_run
from ganpipe.pipeline.runner import LocalRunner

PIPELINE = "store"


def make(inputs, outputs, params, ctx):
    """A model-like artifact: weights in two files, a description, and logs (not content)."""
    model = outputs["model"]
    for name in ("generator.keras", "generator_ema.keras"):
        with open(model.path(name), "wb") as f:
            f.write(name.encode() * params["size"])
    model.write_json("model.json", {"ema": True})
    os.makedirs(model.path("logs"), exist_ok=True)
    with open(model.path("logs", "events"), "w") as f:
        f.write("loss 0.5")


def use(inputs, outputs, params, ctx):
    with open(inputs["model"].path("generator_ema.keras"), "rb") as f:
        outputs["report"].write_json("report.json", {"bytes": len(f.read())})


NODES = [
    Node.of(Component("Make", {}, {"model": "Model"}, (Parameter("size", int, 3),), make)),
    Node.of(Component("Use", {"model": "Model"}, {"report": "Report"}, (), use), {"model": "Make.model"}),
]


def runner(root, lines=None, size=None):
    return LocalRunner(str(root), PIPELINE, NODES, {"make": {"size": size}} if size else {},
                       echo=(lines.append if lines is not None else lambda line: None))


def run(root, size=None):
    """Runs the toy pipeline (``size``: Make's parameter); its steps by component and its lines."""
    lines = []
    result = runner(root, lines, size).run()
    assert result.state == "COMPLETE", result.error
    return {step.component: step for step in result.steps}, lines


def cli(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


# -- a cache hit hands on only whole artifacts ----------------------------------------------------

def test_a_deleted_file_makes_the_step_run_again_and_says_why(tmp_path):
    steps, _ = run(tmp_path)
    model = steps["Make"].outputs["model"]
    os.remove(model.path("generator_ema.keras"))
    plan = {step: (verdict, why) for step, verdict, why in dry_run(runner(tmp_path))}
    reason = f"outputs of execution {steps['Make'].execution_id} damaged: {model.uri}: generator_ema.keras missing"
    assert plan["Make"] == ("will run", reason)
    again, lines = run(tmp_path)
    assert again["Make"].status == "ran" and f"      not reusable: {reason}" in lines
    assert os.path.isfile(again["Make"].outputs["model"].path("generator_ema.keras"))
    assert again["Use"].status == "cached"  # the same content again: downstream is a hit


def test_a_file_of_another_size_is_damage_and_logs_are_not_content(tmp_path):
    steps, _ = run(tmp_path)
    model = steps["Make"].outputs["model"]
    shutil.rmtree(model.path("logs"))
    assert run(tmp_path)[0]["Make"].status == "cached"
    with open(model.path("generator.keras"), "ab") as f:
        f.write(b"x")
    again, lines = run(tmp_path)
    published = len(b"generator.keras") * 3
    assert again["Make"].status == "ran"
    assert any(f"generator.keras is {published + 1} bytes, published {published}" in line for line in lines)


def test_verify_names_the_file_that_went_missing(tmp_path):
    steps, _ = run(tmp_path)
    model = steps["Make"].outputs["model"]
    os.remove(model.path("model.json"))
    result = cli("verify", "--root", tmp_path)
    assert result.exit_code == 1
    assert f"files changed (model.json missing): artifact {model.id} {model.uri}" in result.output


# -- a damaged store --------------------------------------------------------------------------------

def overwrite_header(path):
    with open(path, "r+b") as f:
        f.write(b"\0" * 100)


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


COMMANDS = [["run", "--dry-run", "--set", f"pipeline.name={PIPELINE}"], ["run", "--set", f"pipeline.name={PIPELINE}"],
            ["runs"], ["show", "1"], ["lineage", "1"], ["verify"], ["gc"], ["gc", "--dry-run"]]


@pytest.mark.parametrize("damage", [overwrite_header, truncate])
def test_a_damaged_store_is_one_line_naming_it_and_the_way_out_from_every_command(tmp_path, damage):
    for _ in range(3):  # a store of several pages, so that half of it is missing some
        run(tmp_path / "root")
        shutil.rmtree(tmp_path / "root" / PIPELINE / "Make" / "model")
    store = tmp_path / "root" / "metadata.sqlite"
    damage(store)
    for command in COMMANDS:
        result = cli(*command, "--root", tmp_path / "root")
        assert result.exit_code == 2, (command, result.output)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
        assert f"Error: {store}: damaged metadata store" in result.output
        assert f"sqlite3 {store} .recover | sqlite3 {store}.recovered" in result.output


def test_a_store_recovered_without_its_version_or_with_tables_lost_is_completed_by_gc(tmp_path):
    run(tmp_path)
    with sqlite3.connect(tmp_path / "metadata.sqlite") as db:  # what `sqlite3 .dump` gives back
        db.execute("PRAGMA user_version = 0")
        db.execute("DROP TABLE events")
    result = cli("runs", "--root", tmp_path)
    assert result.exit_code == 2 and "incomplete store (no table events); `ganpipe gc`" in result.output
    assert cli("gc", "--root", tmp_path).exit_code == 0
    result = cli("runs", "--root", tmp_path)
    assert result.exit_code == 0 and "COMPLETE" in result.output


@pytest.mark.parametrize("store_left", ["zero-length", "moved aside"])
def test_a_store_that_records_nothing_is_refused_beside_published_artifacts(tmp_path, store_left):
    run(tmp_path)
    store = tmp_path / "metadata.sqlite"
    if store_left == "zero-length":
        store.write_bytes(b"")
    else:
        store.rename(tmp_path / "metadata.sqlite.old")
    before = sorted(os.listdir(tmp_path / PIPELINE / "Make" / "model"))
    with pytest.raises(StoreError, match=f"records no runs, but {tmp_path / PIPELINE} holds 2 published output"):
        runner(tmp_path).run()
    result = cli("run", "--dry-run", "--set", f"pipeline.name={PIPELINE}", "--root", tmp_path)
    assert result.exit_code == 2 and f"move {tmp_path / PIPELINE} aside" in result.output, result.output
    assert sorted(os.listdir(tmp_path / PIPELINE / "Make" / "model")) == before
    with MetadataStore(str(tmp_path)) as fresh:
        assert fresh.runs() == []


def test_an_empty_store_file_with_no_artifacts_beside_it_plans_a_first_run(tmp_path):
    (tmp_path / "metadata.sqlite").write_bytes(b"")
    assert {why for _, _, why in dry_run(runner(tmp_path))} == {f"no runs yet under {tmp_path}"}
    assert run(tmp_path)[0]["Use"].status == "ran"


def test_the_store_refuses_an_event_naming_an_artifact_it_never_recorded(tmp_path):
    with MetadataStore(str(tmp_path)) as store:
        run_id = store.start_run(PIPELINE, {}, "run-x.lock")
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            store.start_execution(run_id, "Use", {}, "key", "code", {"model": Artifact("Model", "/nowhere", id=999)})
        assert store.executions() == []  # the whole transaction was rolled back


# -- gc --dry-run ------------------------------------------------------------------------------------

def test_gc_dry_run_lists_what_gc_deletes_and_writes_nothing(tmp_path):
    first, _ = run(tmp_path)
    run(tmp_path, size=4)
    with MetadataStore(str(tmp_path)) as store:  # a run whose process is gone used the first model
        dead = store.start_run(PIPELINE, {}, "run-gone.lock")
        store.start_execution(dead, "Use", {}, "key", "code", {"model": first["Make"].outputs["model"]})
    store_bytes = (tmp_path / "metadata.sqlite").read_bytes()
    listed = gc.collect_garbage(str(tmp_path), dry_run=True)
    assert (tmp_path / "metadata.sqlite").read_bytes() == store_bytes
    assert not os.path.exists(tmp_path / ".locks" / "gc.lock")
    deleted = gc.collect_garbage(str(tmp_path))
    assert first["Make"].outputs["model"].uri in {g.path for g in listed}
    assert sorted((g.path, g.reason) for g in listed) == sorted((g.path, g.reason) for g in deleted)


def test_a_writer_waits_for_another_writers_transaction_instead_of_failing(tmp_path):
    with MetadataStore(str(tmp_path)) as store:
        store.start_run(PIPELINE, {}, "run-a.lock")
    holder = sqlite3.connect(tmp_path / "metadata.sqlite", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    released = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    released.start()
    with MetadataStore(str(tmp_path), timeout=10.0) as store:
        started = time.monotonic()
        store.start_run(PIPELINE, {}, "run-b.lock")
        assert time.monotonic() - started >= 0.4  # it waited for the other write, then wrote
        assert [run.lock for run in store.runs()] == ["run-b.lock", "run-a.lock"]
    released.join()
    holder.close()


def record(store, component, uri, properties=None, inputs=None):
    """One COMPLETE execution of ``component`` in a run of its own, producing ``uri``; the artifact."""
    run_id = store.start_run(PIPELINE, {}, f"run-{component}.lock")
    execution = store.start_execution(run_id, component, {}, "key", "code", inputs or {})
    artifact = Artifact("PushedModel" if properties else "Model", uri, properties or {}, "fingerprint")
    store.complete_execution(execution, {"out": artifact}, {"out": {}})
    store.finish_run(run_id, "COMPLETE")
    return artifact


def test_a_path_leads_to_the_artifact_holding_it_or_to_the_push_that_served_it(tmp_path):
    serving = str(tmp_path / "serving" / "1")
    with MetadataStore(str(tmp_path)) as store:
        model = record(store, "Train", str(tmp_path / "Train" / "model" / "1"))
        pushed = record(store, "Export", str(tmp_path / "Export" / "pushed" / "2"),
                        {"pushed": True, "pushed_destination": serving}, {"model": model})
        assert store.artifact_at(os.path.join(model.uri, "weights", "g.keras")).artifact.id == model.id
        assert store.artifact_at(model.uri + "/").artifact.id == model.id
        assert store.artifact_at(serving).artifact.id == pushed.id
        assert store.artifact_at(os.path.join(serving, "saved_model.pb")).artifact.id == pushed.id
        assert store.artifact_at(serving + "0") is None  # serving/10 is another version
        assert store.artifact_at(str(tmp_path / "elsewhere")) is None


def test_runs_whose_process_is_gone_show_as_abandoned_without_being_marked(tmp_path):
    run(tmp_path)
    with MetadataStore(str(tmp_path)) as store:
        store.start_run(PIPELINE, {}, "run-gone.lock")
    with layout.FileLock(str(tmp_path / layout.LOCKS / "run-alive.lock")):
        with MetadataStore(str(tmp_path)) as store:
            store.start_run(PIPELINE, {}, "run-alive.lock")
        result = cli("runs", "--root", tmp_path)
        states = [line.split()[2] for line in result.output.splitlines()[1:]]
        assert states == ["RUNNING", "ABANDONED", "COMPLETE"], result.output
    with MetadataStore(str(tmp_path), read_only=True) as store:
        assert [run.state for run in store.runs()] == ["RUNNING", "RUNNING", "COMPLETE"]


def test_gc_keeps_what_a_live_run_uses_and_marks_what_it_deletes(tmp_path):
    first, _ = run(tmp_path)
    second, _ = run(tmp_path, size=4)
    run(tmp_path, size=5)
    with layout.FileLock(str(tmp_path / layout.LOCKS / "run-alive.lock")):
        with MetadataStore(str(tmp_path)) as store:
            alive = store.start_run(PIPELINE, {}, "run-alive.lock")
            store.start_execution(alive, "Use", {}, "key", "code", {"model": first["Make"].outputs["model"]})
        listed = {g.path for g in gc.collect_garbage(str(tmp_path), dry_run=True)}
        deleted = {g.path for g in gc.collect_garbage(str(tmp_path))}
    kept, superseded = first["Make"].outputs["model"], second["Make"].outputs["model"]
    assert superseded.uri in listed and superseded.uri in deleted and not os.path.exists(superseded.uri)
    assert kept.uri not in listed | deleted and os.path.isdir(kept.uri)
    with MetadataStore(str(tmp_path), read_only=True) as store:
        assert store.artifact(superseded.id).state == "DELETED" and store.artifact(kept.id).state == "LIVE"



def test_a_cache_hit_records_what_the_cached_step_read_and_handed_on(tmp_path):
    first, _ = run(tmp_path)
    again, _ = run(tmp_path)
    assert again["Use"].status == "cached"
    with MetadataStore(str(tmp_path)) as store:
        inputs = store.execution_artifacts(again["Use"].execution_id, "input")
        outputs = store.execution_artifacts(again["Use"].execution_id, "output")
    assert {name: a.uri for name, a in inputs.items()} == {"model": first["Make"].outputs["model"].uri}
    assert {name: a.uri for name, a in outputs.items()} == {"report": first["Use"].outputs["report"].uri}
