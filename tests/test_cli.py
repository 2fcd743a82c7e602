"""The ganpipe CLI on a toy pipeline (pure Python components writing real files), in process with
click's CliRunner and as real subprocesses for SIGKILL, concurrency and exit codes."""
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ganpipe.pipeline.cli import main
from ganpipe.pipeline.metadata import ABANDONED, CACHED, COMPLETE, MetadataStore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_MODULE = "ganpipe_toy_dag"
# Make -> Fit (resumable) -> Publish. Tests steer executors through files in $TOY_CONTROL, which
# are not parameters and so leave cache keys alone: <C>.hold (wait while it exists), <C>.crash.
TOY_SOURCE = '''
import os
import time

from ganpipe.components.base import Component, ComponentError, Parameter
from ganpipe.pipeline.dag import Node


def _control(component):
    control = os.environ.get("TOY_CONTROL", "")
    if os.path.exists(os.path.join(control, component + ".crash")):
        raise ComponentError(component + ": injected failure")
    hold = os.path.join(control, component + ".hold")
    if os.path.exists(hold):
        open(os.path.join(control, component + ".started"), "w").close()
        deadline = time.time() + 60
        while os.path.exists(hold) and time.time() < deadline:
            time.sleep(0.05)
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))


def make(inputs, outputs, params, ctx):
    ctx.log("making %d numbers" % params["n"])
    _control("Make")
    with open(outputs["numbers"].path("numbers.txt"), "w") as f:
        f.write(" ".join(str(i) for i in range(params["n"])))
    outputs["numbers"].properties["count"] = params["n"]


def fit(inputs, outputs, params, ctx):
    model = outputs["model"]
    resumed = os.path.exists(model.path("checkpoint.txt"))
    with open(model.path("checkpoint.txt"), "a") as f:
        f.write("step\\n")
    _control("Fit")
    with open(inputs["numbers"].path("numbers.txt")) as f:
        total = sum(int(n) for n in f.read().split()) * params["scale"]
    with open(model.path("logs", "train", "events.txt"), "w") as f:
        f.write("loss 0.5")
    with open(model.path("grid.png"), "wb") as f:
        f.write(b"not really a png")
    model.write_json("model.json", {"total": total})
    model.properties.update(loss=0.5, total=total, resumed=resumed, sample_grid="grid.png")


def publish(inputs, outputs, params, ctx):
    _control("Publish")
    destination = os.path.join(ctx.pipeline_root, "serving", str(ctx.execution_id))  # outside the artifact
    os.makedirs(destination)
    outputs["pushed_model"].properties.update(pushed=True, pushed_destination=destination)


def make_json(inputs, outputs, params, ctx):
    _control("Make")
    outputs["numbers"].write_json("numbers.json", list(range(params["n"])))


def fit_json(inputs, outputs, params, ctx):
    _control("Fit")
    outputs["model"].write_json("model.json", {"total": sum(inputs["numbers"].read_json("numbers.json"))})


# Through the filesystem layer only, for roots on an object store.
URI_NODES = [
    Node.of(Component("Make", {}, {"numbers": "Numbers"}, (Parameter("n", int, 3, min=1),), make_json)),
    Node.of(Component("Fit", {"numbers": "Numbers"}, {"model": "Model"}, (), fit_json), {"numbers": "Make.numbers"}),
]

NODES = [
    Node.of(Component("Make", {}, {"numbers": "Numbers"}, (Parameter("n", int, 3, min=1),), make)),
    Node.of(Component("Fit", {"numbers": "Numbers"}, {"model": "Model"}, (Parameter("scale", int, 1),), fit,
                      resumable=True, tensorboard_logs={"train": "model/logs/train"}, dependencies=("click",)),
            {"numbers": "Make.numbers"}),
    Node.of(Component("Publish", {"model": "Model"}, {"pushed_model": "PushedModel"}, (), publish),
            {"model": "Fit.model"}),
]
'''


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory):
    directory = tmp_path_factory.mktemp("toy_module")
    (directory / f"{TOY_MODULE}.py").write_text(TOY_SOURCE)
    sys.path.insert(0, str(directory))
    yield str(directory)
    sys.path.remove(str(directory))
    sys.modules.pop(TOY_MODULE, None)


@pytest.fixture
def env(tmp_path, toy_path, monkeypatch):
    """A root, a config naming the toy DAG and a control directory; returns a small namespace."""
    control = tmp_path / "control"
    control.mkdir()
    monkeypatch.setenv("TOY_CONTROL", str(control))
    config = tmp_path / "toy.yaml"
    config.write_text(f"pipeline: {{name: toy, dag: '{TOY_MODULE}:NODES'}}\nfit: {{scale: 2}}\n")

    class Env:
        root = str(tmp_path / "root")
        path = str(config)
        controls = control
        subprocess_env = {**os.environ, "PYTHONPATH": os.pathsep.join([toy_path, REPO]), "TOY_CONTROL": str(control)}

    return Env


def summary(out):
    """The end-of-run table as {component: [status, seconds, output]}."""
    lines = out[out.index("COMPONENT"):].splitlines()[1:]
    return {line.split()[0]: line.split()[1:] for line in lines[:lines.index("")]}


def cli(*args, expect=0):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == expect, result.output
    return result


def test_run_prints_progress_summary_and_where_to_look(env):
    result = cli("run", env.path, "--root", env.root)
    out = result.stdout
    assert "Run 1 of pipeline toy" in out
    assert out.index("[1/3] Make") < out.index("Make | making 3 numbers") < out.index("[2/3] Fit") < out.index("[3/3] Publish")
    model_dir = os.path.join(env.root, "toy", "Fit", "model", "2")
    table = summary(out)
    assert list(table) == ["Make", "Fit", "Publish"]
    assert table["Fit"][0] == "ran" and table["Fit"][2] == model_dir
    assert "Run 1 COMPLETE" in out
    view = os.path.join(env.root, "toy", "tensorboard", "run-1")
    assert f"TensorBoard: tensorboard --logdir {view}" in out
    assert os.path.realpath(os.path.join(view, "train")) == os.path.join(model_dir, "logs", "train")
    assert f"SavedModel:  {os.path.join(env.root, 'serving', '3')}" in out
    assert f"Samples:     {os.path.join(model_dir, 'grid.png')} (Fit)" in out
    with open(os.path.join(model_dir, "model.json")) as f:
        assert json.load(f) == {"total": (0 + 1 + 2) * 2}

    again = cli("run", env.path, "--root", env.root).stdout
    assert "cached: reusing execution 1 (run 1)" in again
    assert [row[0] for row in summary(again).values()] == ["cached"] * 3


def test_runs_show_and_lineage(env):
    cli("run", env.path, "--root", env.root)
    cli("run", env.path, "--root", env.root, "--set", "fit.scale=3")
    runs = cli("runs", "--root", env.root).stdout.splitlines()
    assert runs[0].split() == ["RUN", "PIPELINE", "STATE", "STARTED", "DURATION"]
    assert [line.split()[:3] for line in runs[1:]] == [["2", "toy", "COMPLETE"], ["1", "toy", "COMPLETE"]]

    shown = cli("show", "2", "--root", env.root).stdout
    assert "Run 2  pipeline toy  COMPLETE" in shown
    rows = {line.split()[0]: line.split() for line in shown.splitlines() if line.split()[:1] in (["Make"], ["Fit"], ["Publish"])}
    assert rows["Make"][1] == "cached" and rows["Make"][3:6] == ["4", "(reuses", "1)"]
    assert rows["Fit"][1] == "ran"
    assert "loss=0.5" in shown and "total=9" in shown and "pushed=True" in shown
    assert cli("show", "99", "--root", env.root, expect=2).stderr.startswith("Error: no run 99")

    model_file = os.path.join(env.root, "toy", "Fit", "model", "5", "model.json")
    lineage = cli("lineage", model_file, "--root", env.root).stdout
    assert lineage.startswith("artifact 4 Model " + os.path.dirname(model_file))
    upstream = lineage[lineage.index("Upstream:"):lineage.index("Downstream:")]
    assert "<- Fit execution 5 (run 2, COMPLETE)" in upstream and "<- Make execution 1 (run 1, COMPLETE)" in upstream
    downstream = lineage[lineage.index("Downstream:"):]
    assert "-> Publish execution 6" in downstream and "pushed_model: artifact 5 PushedModel" in downstream
    pushed = cli("lineage", "5", "--root", env.root).stdout
    assert pushed.endswith("Downstream:\n  (not used by any execution yet)\n")
    served = cli("lineage", os.path.join(env.root, "serving", "6", "saved_model.pb"), "--root", env.root).stdout
    assert served.startswith("artifact 5 PushedModel") and "<- Fit execution 5" in served
    by_id = cli("lineage", "1", "--root", env.root).stdout
    assert "-> Fit execution 2" in by_id and "-> Fit execution 5" in by_id
    assert "(also consumed by cache hits in runs 2)" not in by_id  # Make's cache hit consumed nothing
    assert cli("lineage", "/nowhere", "--root", env.root, expect=2).stderr.startswith("Error: /nowhere: not an artifact")


def printed_command(text: str) -> list[str]:
    """The ganpipe command a message names in parentheses, e.g. "(details: ganpipe show 1 --root R)"."""
    return shlex.split(re.search(r"\((?:details: )?(ganpipe [^)]*)\)", text).group(1))


def run_as_printed(words: list[str], cwd, env) -> subprocess.CompletedProcess:
    """A command exactly as the CLI printed it, run from another working directory."""
    assert words[0] == "ganpipe"
    command = [shutil.which("ganpipe")] if shutil.which("ganpipe") else [sys.executable, "-m", "ganpipe"]
    return subprocess.run(command + words[1:], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_failed_run_exits_1_and_records_the_error(env, tmp_path):
    (env.controls / "Fit.crash").touch()
    result = cli("run", env.path, "--root", env.root, expect=1)
    assert "Error: Fit failed: ComponentError: Fit: injected failure" in result.stderr
    details = run_as_printed(printed_command(result.stderr), tmp_path, env.subprocess_env)
    assert details.returncode == 0 and "Run 1  pipeline toy  FAILED" in details.stdout, details.stderr
    assert summary(result.stdout)["Fit"][0] == "failed"
    assert not os.path.exists(os.path.join(env.root, "toy", "Fit", "model"))
    shown = cli("show", "1", "--root", env.root).stdout
    assert "FAILED" in shown and "Traceback" in shown and "injected failure" in shown
    (env.controls / "Fit.crash").unlink()
    rerun = cli("run", env.path, "--root", env.root).stdout
    assert "Run 2 COMPLETE" in rerun


@pytest.mark.parametrize("args, message", [
    (["--set", "fit.scale=big"], "fit.scale: expected int, got str 'big'"),
    (["--set", "fit.bogus=1"], "fit.bogus: unknown key; allowed keys are scale"),
    (["--until", "Nope"], "unknown component 'Nope'; the pipeline has Make, Fit, Publish"),
    (["--force", "Nope"], "unknown component 'Nope'"),
])
def test_usage_errors_exit_2_before_anything_runs(env, args, message):
    result = cli("run", env.path, "--root", env.root, *args, expect=2)
    assert message in result.stderr
    assert not os.path.exists(env.root)


def test_until_and_force(env):
    until = cli("run", env.path, "--root", env.root, "--until", "fit").stdout
    assert "[2/2] Fit" in until and "Publish" not in until
    forced = cli("run", env.path, "--root", env.root, "--force", "Make").stdout
    assert {c: row[0] for c, row in summary(forced).items()} == {"Make": "ran", "Fit": "cached", "Publish": "ran"}


def test_gc_deletes_superseded_artifacts_and_keeps_lineage(env):
    cli("run", env.path, "--root", env.root)  # executions 1-3
    cli("run", env.path, "--root", env.root, "--set", "fit.scale=3")  # Make cached, Fit 5, Publish 6
    old_model = os.path.join(env.root, "toy", "Fit", "model", "2")
    old_push = os.path.join(env.root, "toy", "Publish", "pushed_model", "3")
    # the first run's version is still served: its push and whole lineage stay
    assert cli("gc", "--dry-run", "--root", env.root).stdout.startswith("0 item(s)")
    shutil.rmtree(os.path.join(env.root, "serving", "3"))  # withdrawn from serving
    dry = cli("gc", "--dry-run", "--root", env.root).stdout
    assert "superseded Fit.model" in dry and old_model in dry and old_push in dry
    assert os.path.join(env.root, "toy", "Make", "numbers", "1") not in dry  # upstream of the newest
    assert f"TensorBoard view of deleted logs {os.path.join(env.root, 'toy', 'tensorboard', 'run-1')}" in dry
    assert "3 item(s)" in dry and "would be freed" in dry
    assert os.path.isdir(old_model)
    done = cli("gc", "--root", env.root).stdout
    assert done.startswith("deleted") and not os.path.exists(old_model) and not os.path.exists(old_push)
    assert os.path.isdir(os.path.join(env.root, "toy", "Fit", "model", "5"))
    assert "[deleted by gc]" in cli("lineage", "2", "--root", env.root).stdout
    assert "0 item(s)" in cli("gc", "--root", env.root).stdout
    rerun = cli("run", env.path, "--root", env.root).stdout  # the deleted artifacts are no cache hit
    assert [row[0] for row in summary(rerun).values()] == ["cached", "ran", "ran"]


def test_commands_need_an_existing_root(tmp_path):
    for command in (["runs"], ["show", "1"], ["lineage", "1"], ["gc"]):
        result = cli(*command, "--root", str(tmp_path / "none"), expect=2)
        assert "no metadata.sqlite here" in result.stderr
    assert not os.path.exists(tmp_path / "none")


def _ganpipe(env, *args, **kwargs):
    """The real console script when installed, else the same entry point through python -m."""
    command = [shutil.which("ganpipe")] if shutil.which("ganpipe") else [sys.executable, "-m", "ganpipe.pipeline.cli"]
    return subprocess.Popen(command + list(args), env=env.subprocess_env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_like_a_foreground_job,
                            **kwargs)


def _like_a_foreground_job():
    # Tests run in the background by a non-interactive shell (`pytest &`, some CI runners) inherit
    # SIGINT ignored, and Python then never raises KeyboardInterrupt; a terminal's Ctrl-C reaches a
    # foreground process whose SIGINT is at its default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(process, timeout=60):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_console_script_exit_codes_and_no_tensorflow_for_cheap_commands(env):
    assert _finish(_ganpipe(env, "--help"))[0] == 0
    assert _finish(_ganpipe(env, "run", env.path, "--root", env.root, "--set", "make.n=0"))[0] == 2
    (env.controls / "Publish.crash").touch()
    code, out, err = _finish(_ganpipe(env, "run", env.path, "--root", env.root))
    assert code == 1 and "Publish failed" in err
    probe = ("import sys\nfrom ganpipe.pipeline.cli import main\n"
             "for args in (['--help'], ['runs', '--root', sys.argv[1]], ['run', '--set', 'nosuch.x=1']):\n"
             "    try:\n        main(args)\n    except SystemExit as e:\n        print('exit', e.code)\n"
             "print('tensorflow imported:', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe, env.root], env=env.subprocess_env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert "exit 0\n" in result.stdout and "exit 2" in result.stdout
    assert "tensorflow imported: False" in result.stdout


def _wait_for(path, process, timeout=30):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _run_until_fit_holds(env, *args):
    """``ganpipe run`` of the toy pipeline, returned once Fit has started and waits on its hold file."""
    (env.controls / "Fit.hold").touch()
    process = _ganpipe(env, "run", env.path, "--root", env.root, *args)
    _wait_for(env.controls / "Fit.started", process)
    return process


def test_sigkill_mid_component_then_rerun_resumes(env):
    process = _run_until_fit_holds(env)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with MetadataStore(env.root) as store:  # as the killed process left it
        assert store.run(1).state == "RUNNING"
        killed = [e for e in store.executions(1) if e.component == "Fit"][0]
        assert killed.state == "RUNNING"
    assert not os.path.exists(os.path.join(env.root, "toy", "Fit", "model"))
    (env.controls / "Fit.hold").unlink()
    result = cli("run", env.path, "--root", env.root).stdout
    assert [row[0] for row in summary(result).values()] == ["cached", "ran", "ran"]
    with MetadataStore(env.root) as store:
        assert store.run(1).state == ABANDONED
        assert store.execution(killed.id).state == ABANDONED
        model = store.execution_artifacts([e for e in store.executions(2) if e.component == "Fit"][0].id, "output")
        assert model["model"].properties["resumed"] is True  # found the killed attempt's checkpoint
    assert "ABANDONED" in cli("runs", "--root", env.root).stdout


def test_concurrent_runs_share_one_root(env):
    env.subprocess_env["TOY_SLEEP"] = "0.3"
    processes = [_ganpipe(env, "run", env.path, "--root", env.root),
                 _ganpipe(env, "run", env.path, "--root", env.root),
                 _ganpipe(env, "run", env.path, "--root", env.root, "--set", "make.n=5")]
    results = [_finish(p) for p in processes]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    with sqlite3.connect(os.path.join(env.root, "metadata.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with MetadataStore(env.root) as store:
        assert [r.state for r in store.runs()] == [COMPLETE] * 3
        executions = store.executions()
        for component in ("Make", "Fit", "Publish"):
            states = sorted(e.state for e in executions if e.component == component)
            # The two identical runs computed each step once between them; the third its own.
            assert states == [CACHED, COMPLETE, COMPLETE], (component, states)
        totals = sorted(r.artifact.properties["total"] for r in store.artifacts(type="Model"))
    assert totals == [6, 20]
    assert len(os.listdir(os.path.join(env.root, "toy", "Fit", "model"))) == 2


# -- ganpipe sample: tiny real Keras generators --------------------------------------------------

@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    directory = tmp_path_factory.mktemp("generators")
    image = directory / "image_model"
    image.mkdir()
    z = keras.Input((4,), name="latent")
    pixels = keras.layers.Reshape((8, 8, 1))(keras.layers.Dense(64, activation="tanh")(z))
    image_generator = keras.Model(z, pixels)
    image_generator.save(image / "generator.keras")
    (image / "model.json").write_text(json.dumps({"latent_dim": 4, "num_classes": 0}))

    vector = directory / "vector_model"
    vector.mkdir()
    z = keras.Input((3,), name="latent")
    vector_generator = keras.Model(z, keras.layers.Dense(2)(z))
    vector_generator.save(vector / "generator.keras")
    (vector / "model.json").write_text(json.dumps({
        "latent_dim": 3, "num_classes": 0, "feature_names": ["height", "weight"],
        "normalization": {"mean": [170.0, 70.0], "std": [10.0, 5.0]}}))

    conditional = directory / "conditional_model"
    conditional.mkdir()
    z, label = keras.Input((4,), name="latent"), keras.Input((), dtype="int32", name="label")
    h = keras.layers.Concatenate()([z, keras.layers.Embedding(3, 2)(label)])
    conditional_generator = keras.Model([z, label], keras.layers.Reshape((4, 4, 3))(keras.layers.Dense(48, activation="tanh")(h)))
    conditional_generator.save(conditional / "generator.keras")
    (conditional / "model.json").write_text(json.dumps({"latent_dim": 4, "num_classes": 3}))

    saved = directory / "saved_model"
    image_generator.export(str(saved), format="tf_saved_model", verbose=False)
    return {"image": str(image), "vector": str(vector), "conditional": str(conditional), "saved": str(saved),
            "image_generator": image_generator, "vector_generator": vector_generator}


def _expected_images(generator, count, latent_dim, seed):
    z = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)
    return np.clip(np.round((np.asarray(generator(z)) + 1) * 127.5), 0, 255).astype(np.uint8)


def test_sample_png_and_grid_from_a_model_artifact(generators, tmp_path):
    out = tmp_path / "pngs"
    assert "Wrote 5 image samples as png" in cli("sample", generators["image"], "-n", "5", "-o", str(out), "--seed", "1").stdout
    names = sorted(os.listdir(out))
    assert names == [f"sample_{i:05d}.png" for i in range(5)]
    expected = _expected_images(generators["image_generator"], 5, 4, seed=1)
    for i, name in enumerate(names):
        png = np.asarray(Image.open(out / name))
        assert png.shape == (8, 8) and np.array_equal(png, expected[i, :, :, 0])
    grid = tmp_path / "grid.png"
    cli("sample", generators["image"], "-n", "5", "-o", str(grid), "--format", "grid", "--seed", "1")
    picture = np.asarray(Image.open(grid))
    assert picture.shape == (2 * 8 * 4, 3 * 8 * 4)  # 3 columns x 2 rows of 8x8 tiles, scaled x4
    assert np.array_equal(picture[:32:4, 32:64:4], expected[1, :, :, 0])


def test_sample_tfrecord_and_saved_model_agree(generators, tmp_path):
    import tensorflow as tf

    cli("sample", generators["saved"], "-n", "3", "-o", str(tmp_path / "a.tfrecord"), "--format", "tfrecord", "--seed", "2")
    cli("sample", generators["image"], "-n", "3", "-o", str(tmp_path / "b.tfrecord"), "--format", "tfrecord", "--seed", "2")
    records = {}
    for name in ("a", "b"):
        examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(tmp_path / f"{name}.tfrecord"))]
        assert [e.features.feature["label"].int64_list.value[0] for e in examples] == [-1, -1, -1]
        records[name] = [e.features.feature["image"].bytes_list.value[0] for e in examples]
    assert records["a"] == records["b"]
    expected = _expected_images(generators["image_generator"], 3, 4, seed=2)
    assert records["b"][2] == expected[2].tobytes()


def test_sample_csv_undoes_the_normalization(generators, tmp_path):
    out = tmp_path / "samples.csv"
    cli("sample", generators["vector"], "-n", "4", "-o", str(out), "--seed", "3")
    lines = out.read_text().splitlines()
    assert lines[0] == "height,weight"
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    z = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)
    expected = np.asarray(generators["vector_generator"](z)) * [10.0, 5.0] + [170.0, 70.0]
    np.testing.assert_allclose(values, expected, rtol=1e-4)


def test_sample_conditional_labels_and_format_errors(generators, tmp_path):
    out = tmp_path / "conditional"
    cli("sample", generators["conditional"], "-n", "4", "-o", str(out))
    assert sorted(os.listdir(out)) == ["sample_00000_label0.png", "sample_00001_label1.png",
                                       "sample_00002_label2.png", "sample_00003_label0.png"]
    assert Image.open(out / "sample_00000_label0.png").mode == "RGB"
    result = cli("sample", generators["image"], "-n", "2", "-o", str(tmp_path / "x.csv"), "--format", "csv", expect=2)
    assert "--format csv does not suit image data; use one of png, grid, tfrecord" in result.stderr
    assert "neither generator.keras" in cli("sample", str(tmp_path), "-n", "1", "-o", str(tmp_path / "y"), expect=2).stderr


# ------------------------------------------------------------- what a user sees (issue 15)


def test_json_of_runs_and_show(env):
    cli("run", env.path, "--root", env.root)
    runs = json.loads(cli("runs", "--json", "--root", env.root).stdout)
    assert [(r["id"], r["pipeline"], r["state"]) for r in runs] == [(1, "toy", "COMPLETE")]
    shown = json.loads(cli("show", "1", "--json", "--root", env.root).stdout)
    assert [(s["component"], s["status"]) for s in shown["steps"]] == [("Make", "ran"), ("Fit", "ran"), ("Publish", "ran")]
    fit = shown["steps"][1]
    assert fit["parameters"] == {"scale": 2} and fit["outputs"]["model"]["properties"]["total"] == 6
    assert shown["steps"][2]["export"]["pushed"] is True


def test_each_execution_has_a_log_file_and_the_view_exists_from_the_start(env):
    process = _run_until_fit_holds(env)
    view = os.path.join(env.root, "toy", "tensorboard", "run-1")
    live = os.path.realpath(os.path.join(view, "train"))
    assert live.startswith(os.path.join(env.root, "toy", "Fit", ".staging") + os.sep)
    assert live.endswith(os.path.join("model", "logs", "train")) and os.path.isdir(live)
    (env.controls / "Fit.hold").unlink()
    code, out, err = _finish(process)
    assert code == 0, err
    assert out.index(f"TensorBoard (live): tensorboard --logdir {view}") < out.index("[1/3] Make")
    published = os.path.join(env.root, "toy", "Fit", "model", "2", "logs", "train")
    assert os.readlink(os.path.join(view, "train")) == published  # re-pointed on publish
    assert [name for name in os.listdir(view)] == ["train"]  # no temporary links left behind
    with open(os.path.join(env.root, "toy", "Make", "logs", "1.log")) as f:
        assert "ganpipe.Make: making 3 numbers" in f.read()


def test_closed_stdout_never_fails_a_step(env):
    """`ganpipe run | head -1`: the reader goes away while Fit runs; the run still completes."""
    (env.controls / "Fit.hold").touch()
    process = _ganpipe(env, "run", env.path, "--root", env.root)
    assert process.stdout.readline().startswith("Run 1 of pipeline toy")
    _wait_for(env.controls / "Fit.started", process)
    process.stdout.close()  # as head does after its line
    (env.controls / "Fit.hold").unlink()
    assert process.wait(timeout=60) == 0, process.stderr.read()
    assert "BrokenPipeError" not in process.stderr.read()
    with MetadataStore(env.root) as store:
        assert store.run(1).state == COMPLETE
        assert [e.state for e in store.executions(1)] == [COMPLETE] * 3
    assert os.path.exists(os.path.join(env.root, "serving", "3"))


def test_ctrl_c_exits_130_and_the_run_resumes(env):
    process = _run_until_fit_holds(env)
    process.send_signal(signal.SIGINT)
    code, out, err = _finish(process)
    assert code == 130 and "Interrupted" in err and "Traceback" not in err
    listed = run_as_printed(printed_command(err), env.controls, env.subprocess_env)
    assert listed.returncode == 0 and re.search(r"^1\s+toy\s+FAILED", listed.stdout, re.M), listed.stderr
    with MetadataStore(env.root) as store:
        run = store.run(1)
        assert run.state == "FAILED" and "interrupted (Ctrl-C); resumable" in run.error
        fit = [e for e in store.executions(1) if e.component == "Fit"][0]
        assert fit.state == "FAILED" and fit.error.startswith("interrupted (Ctrl-C); resumable: run it again "
                                                               "to resume from the last checkpoint")
    (env.controls / "Fit.hold").unlink()
    result = cli("run", env.path, "--root", env.root).stdout
    assert [row[0] for row in summary(result).values()] == ["cached", "ran", "ran"]
    with MetadataStore(env.root) as store:
        model = store.execution_artifacts([e for e in store.executions(2) if e.component == "Fit"][0].id, "output")
        assert model["model"].properties["resumed"] is True


def test_dry_run_says_cached_or_will_run_and_why(env):
    def plan(*args):
        lines = cli("run", env.path, "--root", env.root, "--dry-run", *args).stdout.splitlines()
        at, why = lines[0].index("PLAN"), lines[0].index("WHY")
        return {line.split()[1]: [line[at:why].strip(), line[why:]] for line in lines[1:]}

    assert plan()["Make"][1].startswith("no runs yet")
    assert not os.path.exists(os.path.join(env.root, "toy"))  # nothing ran
    cli("run", env.path, "--root", env.root)
    first = plan()
    assert [first[c][0] for c in ("Make", "Fit", "Publish")] == ["cached"] * 3
    assert first["Fit"][1].startswith("same parameters, inputs and code as execution 2 (run 1)")
    changed = plan("--set", "fit.scale=5")
    assert changed["Make"][0] == "cached"
    assert changed["Fit"] == ["will run", "parameters changed since execution 2: scale 2 -> 5"]
    assert changed["Publish"] == ["will run", "if the new output of Fit differs"]
    assert plan("--force", "Make")["Make"] == ["will run", "forced (--force)"]
    with MetadataStore(env.root) as store:
        assert len(store.runs()) == 1  # dry runs record nothing


def test_dry_run_names_the_dependency_whose_upgrade_reruns_a_step(env, monkeypatch):
    """As after ``pip install -U click``: Fit declares click, so its key changes, and the plan says
    which version moved (the key's material of execution 2 is kept beside its log)."""
    from importlib.metadata import version

    from ganpipe.pipeline import cache

    cli("run", env.path, "--root", env.root)
    real = cache.dependency_versions
    monkeypatch.setattr(cache, "dependency_versions",
                        lambda names: {**real(names), **({"click": "99.0"} if "click" in names else {})})
    lines = cli("run", env.path, "--root", env.root, "--dry-run").stdout.splitlines()
    fit = next(line for line in lines if " Fit " in line)
    assert "will run" in fit and f"dependency versions changed: click {version('click')} -> 99.0 since execution 2" in fit
    assert "cached" in next(line for line in lines if " Make " in line)


def test_config_prints_yaml_with_help_that_loads_back(tmp_path):
    out = cli("config", "--set", "train.network.width=48", "--set", "train.d_learning_rate=1e-4").stdout
    assert "  d_learning_rate: 0.0001  # Adam learning rate of the discriminator" in out
    assert "    width: 48  # D's first conv width" in out
    assert "  loss: non_saturating  # GAN loss [non_saturating | minimax | wasserstein | hinge | least_squares]" in out
    (tmp_path / "all.yaml").write_text(out)
    from ganpipe.pipeline.config import load_config
    reloaded = load_config(str(tmp_path / "all.yaml"))
    assert reloaded.parameters == load_config(None, ["train.network.width=48", "train.d_learning_rate=1e-4"]).parameters
    only = cli("config", "evaluate", "--defaults", "--set", "evaluate.num_samples=50").stdout
    assert only.splitlines()[1] == "evaluate:" and "num_samples: 2000" in only and "train:" not in only
    assert "did you mean 'train'" in cli("config", "trian", expect=2).stderr


def test_gc_beside_a_training_run(env):
    """gc while a run trains: it deletes superseded artifacts but not what the run has claimed as
    a cache hit (here an older Make output), nor the run's staging; the run then completes."""
    cli("run", env.path, "--root", env.root, "--set", "make.n=4")
    cli("run", env.path, "--root", env.root, "--set", "make.n=5")
    shutil.rmtree(os.path.join(env.root, "serving", "3"))  # the first run's version is withdrawn
    process = _run_until_fit_holds(env, "--set", "make.n=4", "--set", "fit.scale=7")
    make_n4 = os.path.join(env.root, "toy", "Make", "numbers", "1")
    fit_n4 = os.path.join(env.root, "toy", "Fit", "model", "2")
    staging = os.path.join(env.root, "toy", "Fit", ".staging")
    attempt = [name for name in os.listdir(staging) if not name.endswith(".lock")]
    done = cli("gc", "--include-partial", "--root", env.root).stdout
    assert fit_n4 in done and not os.path.exists(fit_n4)  # superseded and unused: deleted
    assert make_n4 not in done and os.path.isdir(make_n4)  # the running run's cache hit: kept
    assert [name for name in os.listdir(staging) if not name.endswith(".lock")] == attempt  # in use: kept
    (env.controls / "Fit.hold").unlink()
    code, out, err = _finish(process)
    assert code == 0, err
    assert [row[0] for row in summary(out).values()] == ["cached", "ran", "ran"]
    assert "0 problem(s)" in cli("verify", "--root", env.root).stdout


def test_gc_keeps_a_killed_trainings_checkpoints_unless_asked(env):
    process = _run_until_fit_holds(env)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    staging = os.path.join(env.root, "toy", "Fit", ".staging")
    attempt = [name for name in os.listdir(staging) if not name.endswith(".lock")]
    assert "0 item(s)" in cli("gc", "--root", env.root).stdout
    assert [name for name in os.listdir(staging) if not name.endswith(".lock")] == attempt
    assert "partial resumable attempt" in cli("gc", "--dry-run", "--include-partial", "--root", env.root).stdout
    (env.controls / "Fit.hold").unlink()
    cli("run", env.path, "--root", env.root)
    with MetadataStore(env.root) as store:
        assert store.artifacts(type="Model")[0].artifact.properties["resumed"] is True


@pytest.mark.slow
def test_commands_printed_for_a_gs_root_work_as_printed(env, gcs_bucket, tmp_path, monkeypatch):
    """On an object-store root the store stays on a local disk (here ./ganpipe_runs of the run's
    working directory): the failure hint names both, and every command that finds runs takes the
    same --root and --metadata, from any directory."""
    config = tmp_path / "uri.yaml"
    config.write_text(f"pipeline: {{name: toyuri, dag: '{TOY_MODULE}:URI_NODES'}}\n")
    (env.controls / "Fit.crash").touch()
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("GANPIPE_ROOT", raising=False)
    root = f"{gcs_bucket}/{tmp_path.name}/runs"
    result = cli("run", str(config), "--root", root, expect=1)
    words = printed_command(result.stderr)
    assert words[:4] == ["ganpipe", "show", "1", "--root"] and words[4] == root
    subprocess_env = {key: value for key, value in env.subprocess_env.items() if key != "GANPIPE_ROOT"}
    subprocess_env["STORAGE_EMULATOR_HOST"] = os.environ["STORAGE_EMULATOR_HOST"]
    shown = run_as_printed(words, elsewhere, subprocess_env)
    assert shown.returncode == 0, shown.stderr
    assert "Run 1  pipeline toyuri  FAILED" in shown.stdout and "injected failure" in shown.stdout
    assert f"{root}/toyuri/Make/numbers/1" in shown.stdout
    locations = words[3:]
    for command, expected in ((["runs"], r"^1\s+toyuri\s+FAILED"), (["lineage", "1"], r"^artifact 1 Numbers gs://"),
                              (["verify"], r"^1 live artifact\(s\) checked, 0 problem"),
                              (["gc", "--dry-run"], r"item\(s\)")):
        done = run_as_printed(["ganpipe", *command, *locations], elsewhere, subprocess_env)
        assert done.returncode == 0 and re.search(expected, done.stdout, re.M), (command, done.stdout, done.stderr)
    assert not os.listdir(elsewhere) and not os.path.exists(here / "gs:")


def test_a_non_chief_worker_keeps_its_temporary_files_in_its_scratch_and_removes_them_on_any_exit(
        tmp_path, monkeypatch):
    import tempfile

    from ganpipe.pipeline import execute

    root = str(tmp_path / "root")
    scratch = os.path.join(execute.worker_scratch_root(root, "p"), "worker-1")
    os.makedirs(os.path.join(scratch, "left-by-a-killed-worker"))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(RuntimeError, match="preempted"):
        with execute.worker_scratch(root, "p"):
            assert os.listdir(scratch) == []  # emptied when the worker starts
            work = tempfile.mkdtemp(prefix="ganpipe-worker-")  # as Train's non-chief workers make it
            assert os.path.dirname(work) == scratch
            raise RuntimeError("preempted")
    assert not os.path.exists(scratch) and tempfile.gettempdir() != scratch
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    with execute.worker_scratch(root, "p"):  # the chief writes the real outputs, no scratch
        assert tempfile.gettempdir() != scratch


def test_gc_sweeps_what_a_killed_worker_left_in_its_scratch(env):
    from ganpipe.pipeline import execute

    cli("run", env.path, "--root", env.root)
    left = os.path.join(execute.worker_scratch_root(env.root, "toy"), "worker-1")
    os.makedirs(os.path.join(left, "checkpoints"))
    with open(os.path.join(left, "checkpoints", "ckpt-1.data"), "wb") as f:
        f.write(b"x" * 1000)
    assert re.search(r"would delete .* worker scratch +" + re.escape(left), cli("gc", "--dry-run", "--root", env.root).stdout)
    assert os.path.exists(left)
    cli("gc", "--root", env.root)
    assert not os.path.exists(left)
