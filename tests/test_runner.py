"""LocalRunner and metadata store on toy pure-Python components that write real files."""
import logging
import os
import sqlite3

import pytest

from ganpipe.components.base import Artifact, Component, Parameter
from ganpipe.pipeline import dag
from ganpipe.pipeline.dag import Node, PipelineError
from ganpipe.pipeline.metadata import CACHED, COMPLETE, FAILED, MetadataStore
from ganpipe.infra.fingerprints import artifact_fingerprint
from ganpipe.pipeline.runner import LocalRunner, tensorboard_view

PIPELINE = "toy"


class Toys:
    """A toy pipeline Source -> Square -> Total, plus Side (from Source) which Total ignores.
    Executors record their calls; ``crash`` names a component that fails after a partial write."""

    def __init__(self):
        self.calls: list[str] = []
        self.crash: str | None = None
        self.seen_in_staging: list[list[str]] = []

    def source(self, inputs, outputs, params, ctx):
        self.calls.append("Source")
        ctx.log(f"writing {params['count']} values")
        with open(outputs["numbers"].path("numbers.txt"), "w") as f:
            f.write("\n".join(str(i) for i in range(params["count"])))
        outputs["numbers"].properties["count"] = params["count"]

    def square(self, inputs, outputs, params, ctx):
        self.calls.append("Square")
        self.seen_in_staging.append(sorted(os.listdir(outputs["squares"].uri)))
        numbers = _read_numbers(inputs["numbers"].path("numbers.txt"))
        with open(outputs["squares"].path("squares.txt"), "w") as f:
            f.write("partial")
            if self.crash == "Square":
                raise RuntimeError("injected crash while writing squares")
            f.seek(0)
            f.write("\n".join(str(n ** params["power"]) for n in numbers))

    def total(self, inputs, outputs, params, ctx):
        self.calls.append("Total")
        total = sum(_read_numbers(inputs["squares"].path("squares.txt")))
        outputs["report"].write_json("report.json", {"total": total})
        outputs["report"].properties.update(total=total, report=outputs["report"].path("report.json"))

    def side(self, inputs, outputs, params, ctx):
        self.calls.append("Side")
        outputs["note"].write_json("note.json", {"count": inputs["numbers"].properties["count"]})

    def nodes(self, resumable_square=False):
        source = Component("Source", {}, {"numbers": "Numbers"},
                           (Parameter("count", int, 4, min=1), Parameter("label", str, "a")), self.source)
        square = Component("Square", {"numbers": "Numbers"}, {"squares": "Numbers"},
                           (Parameter("power", int, 2, choices=(2, 3)),), self.square, resumable=resumable_square)
        total = Component("Total", {"squares": "Numbers"}, {"report": "Report"}, (), self.total)
        side = Component("Side", {"numbers": "Numbers"}, {"note": "Note"}, (), self.side)
        # Declared out of order on purpose: the runner must order them from the wiring.
        return [Node.of(total, {"squares": "Square.squares"}), Node.of(side, {"numbers": "Source.numbers"}),
                Node.of(square, {"numbers": "Source.numbers"}), Node.of(source)]


def _read_numbers(path):
    with open(path) as f:
        return [int(line) for line in f.read().split()]


@pytest.fixture
def toys():
    return Toys()


def run(root, toys, parameters=None, resumable_square=False, **kwargs):
    lines = []
    runner = LocalRunner(root, PIPELINE, toys.nodes(resumable_square), parameters or {}, echo=lines.append)
    result = runner.run(**kwargs)
    result.lines = lines
    return result


def statuses(result):
    return {step.component: step.status for step in result.steps}


def test_runs_in_dependency_order_and_publishes_outputs(tmp_path, toys, caplog):
    caplog.set_level("INFO", logger="ganpipe")
    logger = logging.getLogger("ganpipe")
    logger.addHandler(caplog.handler)  # component messages go through logging (the CLI's logger does not propagate)
    try:
        result = run(tmp_path, toys)
    finally:
        logger.removeHandler(caplog.handler)
    assert result.state == COMPLETE
    order = [step.component for step in result.steps]
    assert order.index("Source") < order.index("Square") < order.index("Total")
    assert order.index("Source") < order.index("Side")
    assert sorted(toys.calls) == ["Side", "Source", "Square", "Total"]
    report = result.steps[order.index("Total")].outputs["report"]
    assert report.uri == os.path.join(tmp_path, PIPELINE, "Total", "report", str(result.steps[order.index("Total")].execution_id))
    assert report.read_json("report.json") == {"total": 0 + 1 + 4 + 9}
    # A path the executor stored while writing to staging now points at the published file.
    assert report.properties["report"] == report.path("report.json")
    staging = os.listdir(os.path.join(tmp_path, PIPELINE, "Square", ".staging"))
    assert [name for name in staging if not name.endswith(".lock")] == []  # published, nothing left behind
    assert ("ganpipe.Source", logging.INFO, "writing 4 values") in caplog.record_tuples


def test_lineage_is_recorded_both_ways(tmp_path, toys):
    result = run(tmp_path, toys)
    steps = {s.component: s for s in result.steps}
    numbers = steps["Source"].outputs["numbers"]
    with MetadataStore(str(tmp_path)) as store:
        record = store.artifact_at(numbers.path("numbers.txt"))
        assert record.artifact.id == numbers.id and record.component == "Source"
        assert record.artifact.fingerprint == artifact_fingerprint(numbers.uri)
        assert {e.component for e in store.consumers(numbers.id)} == {"Square", "Side"}
        square_inputs = store.execution_artifacts(steps["Square"].execution_id, "input")
        assert square_inputs["numbers"].id == numbers.id
        execution = store.execution(steps["Square"].execution_id)
        assert execution.state == COMPLETE and execution.parameters == {"power": 2}


def test_second_run_is_all_cache_hits(tmp_path, toys):
    first = run(tmp_path, toys)
    toys.calls.clear()
    second = run(tmp_path, toys)
    assert toys.calls == []
    assert set(statuses(second).values()) == {"cached"}
    assert [s.outputs["numbers"].uri for s in second.steps if s.component == "Source"] == \
           [s.outputs["numbers"].uri for s in first.steps if s.component == "Source"]
    with MetadataStore(str(tmp_path)) as store:
        assert {e.state for e in store.executions(second.run_id)} == {CACHED}


def test_parameter_change_reruns_component_and_downstream(tmp_path, toys):
    run(tmp_path, toys)
    toys.calls.clear()
    result = run(tmp_path, toys, parameters={"square": {"power": 3}})
    assert statuses(result) == {"Source": "cached", "Side": "cached", "Square": "ran", "Total": "ran"}
    total = next(s for s in result.steps if s.component == "Total").outputs["report"]
    assert total.properties["total"] == 0 + 1 + 8 + 27


def test_input_change_reruns_downstream_and_identical_output_does_not(tmp_path, toys):
    run(tmp_path, toys)
    changed = run(tmp_path, toys, parameters={"source": {"count": 5, "label": "a"}})
    assert statuses(changed) == {"Source": "ran", "Side": "ran", "Square": "ran", "Total": "ran"}
    # A parameter that does not change Source's files: Source re-runs, its output fingerprint is
    # unchanged, so everything downstream is a cache hit.
    same_output = run(tmp_path, toys, parameters={"source": {"count": 5, "label": "b"}})
    assert statuses(same_output) == {"Source": "ran", "Side": "cached", "Square": "cached", "Total": "cached"}


def test_code_key_is_the_executors_import_closure(tmp_path, monkeypatch):
    """Editing a module the executor imports re-runs it; editing one it does not is a cache hit."""
    package = tmp_path / "src" / "toypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("SCALE = 1\n")
    (package / "unrelated.py").write_text("OTHER = 1\n")
    (package / "steps.py").write_text(
        "from . import helper\n\n\ndef make(inputs, outputs, params, ctx):\n"
        "    with open(outputs['out'].path('x.txt'), 'w') as f:\n        f.write(str(helper.SCALE))\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    nodes = [Node.of(Component("Make", {}, {"out": "Numbers"}, (), "toypkg.steps:make"))]

    def status():
        return LocalRunner(tmp_path / "root", PIPELINE, nodes, echo=lambda line: None).run().steps[0].status

    assert status() == "ran"
    (package / "unrelated.py").write_text("OTHER = 2\n")
    assert status() == "cached"
    (package / "helper.py").write_text("SCALE = 2\n")
    assert status() == "ran"


def test_default_components_hash_only_what_they_import():
    """A one-line change to cli.py must not retrain: Train's closure is train.py and what it imports."""
    from ganpipe.components import specs
    from ganpipe.pipeline import cache

    train = cache.code_closure(specs.TRAIN)
    assert {"ganpipe.components.train", "ganpipe.ganmodels.gan", "ganpipe.ganmodels.losses"} <= set(train)
    assert not {"ganpipe.pipeline.cli", "ganpipe.pipeline.runner", "ganpipe.components.export"} & set(train)
    ingest = cache.code_closure(specs.INGEST)
    assert "ganpipe.components.sources" in ingest and "ganpipe.ganmodels.gan" not in ingest


def test_ingest_key_covers_every_source_kind_module():
    """The registry imports a kind's module by name when a source is planned: editing
    sources/images.py must still re-run Ingest, not give a stale cache hit."""
    from ganpipe.components import sources, specs
    from ganpipe.pipeline import cache

    kind_modules = {kind.module for kind in sources.KINDS.values()}
    assert len(kind_modules) == len(sources.KINDS) >= 7
    assert kind_modules <= set(cache.code_closure(specs.INGEST))


def test_crash_leaves_no_published_artifact_and_rerun_completes(tmp_path, toys):
    toys.crash = "Square"
    failed = run(tmp_path, toys)
    assert failed.state == FAILED and "injected crash" in failed.error
    assert "Total" not in statuses(failed)
    assert not os.path.exists(os.path.join(tmp_path, PIPELINE, "Square", "squares"))
    with MetadataStore(str(tmp_path)) as store:
        assert store.run(failed.run_id).state == FAILED
        crashed = store.executions(failed.run_id, FAILED)[0]
        assert crashed.component == "Square" and "injected crash while writing squares" in crashed.error
        assert store.execution_artifacts(crashed.id, "output") == {}
    toys.crash = None
    rerun = run(tmp_path, toys)
    assert rerun.state == COMPLETE
    assert statuses(rerun)["Source"] == "cached" and statuses(rerun)["Square"] == "ran"
    assert toys.seen_in_staging[-1] == []  # the failed attempt's partial file was cleared first
    squares = next(s for s in rerun.steps if s.component == "Square").outputs["squares"]
    assert _read_numbers(squares.path("squares.txt")) == [0, 1, 4, 9]


def test_resumable_component_finds_its_previous_attempt(tmp_path, toys):
    toys.crash = "Square"
    assert run(tmp_path, toys, resumable_square=True).state == FAILED
    toys.crash = None
    assert run(tmp_path, toys, resumable_square=True).state == COMPLETE
    assert toys.seen_in_staging == [[], ["squares.txt"]]


def test_until_runs_only_the_component_and_its_upstream(tmp_path, toys):
    result = run(tmp_path, toys, until="square")
    assert [s.component for s in result.steps] == ["Source", "Square"]
    with pytest.raises(PipelineError, match="unknown component 'Nope'"):
        run(tmp_path, toys, until="Nope")


def test_force_reruns_the_component_and_downstream_follows_the_fingerprint(tmp_path, toys):
    run(tmp_path, toys)
    forced = run(tmp_path, toys, force=["Square"])
    assert statuses(forced) == {"Source": "cached", "Side": "cached", "Square": "ran", "Total": "cached"}
    assert set(statuses(run(tmp_path, toys, force=["all"])).values()) == {"ran"}


def test_deleted_artifact_directory_is_not_a_cache_hit(tmp_path, toys):
    first = run(tmp_path, toys)
    squares = next(s for s in first.steps if s.component == "Square").outputs["squares"]
    os.rename(squares.uri, squares.uri + ".moved")
    assert statuses(run(tmp_path, toys))["Square"] == "ran"


def test_wiring_errors_are_named(toys):
    source, square = toys.nodes()[3].component, toys.nodes()[2].component
    with pytest.raises(PipelineError, match="cycle"):
        dag.topological_order([Node.of(source, {"x": "Square.squares"}), Node.of(square, {"numbers": "Source.numbers"})])
    with pytest.raises(PipelineError, match="unknown component 'Missing'"):
        dag.topological_order([Node.of(square, {"numbers": "Missing.numbers"})])
    with pytest.raises(PipelineError, match="required input 'numbers' is not wired"):
        dag.check_wiring([Node.of(square)])
    report = Component("Total", {"squares": "Report"}, {}, (), toys.total)
    with pytest.raises(PipelineError, match="expects Report, Square.squares is Numbers"):
        dag.check_wiring([Node.of(source), Node.of(square, {"numbers": "Source.numbers"}),
                          Node.of(report, {"squares": "Square.squares"})])


def test_default_dag_is_wired_in_order():
    names = [node.name for node in dag.topological_order(dag.DEFAULT_NODES)]
    assert names == ["Ingest", "Preprocess", "Classifier", "Train", "Evaluate", "Export"]
    # Train reads the Classifier's feature space for its quality curve.
    assert [n.name for n in dag.upstream_closure(dag.DEFAULT_NODES, "train")] == ["Ingest", "Preprocess", "Classifier",
                                                                                  "Train"]


def test_store_is_a_valid_wal_database(tmp_path, toys):
    run(tmp_path, toys)
    with sqlite3.connect(tmp_path / "metadata.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_tensorboard_view_links_every_log_directory(tmp_path):
    model, statistics = Artifact("Model", str(tmp_path / "model")), Artifact("Statistics", str(tmp_path / "stats"))
    os.makedirs(model.path("logs", "train"))
    os.makedirs(statistics.path("logs"))
    (tmp_path / "stats" / "logs" / "events.out.tfevents.1").write_text("")
    view = tensorboard_view(str(tmp_path / "root"), PIPELINE, 7, [("Train", model), ("Preprocess", statistics)])
    assert view == str(tmp_path / "root" / PIPELINE / "tensorboard" / "run-7")
    assert {name: os.readlink(os.path.join(view, name)) for name in os.listdir(view)} == {
        "train": model.path("logs", "train"), "preprocess": statistics.path("logs")}
    assert tensorboard_view(str(tmp_path / "root"), PIPELINE, 8, [("Source", Artifact("X", str(tmp_path)))]) is None
