"""`ganpipe compile --target kubeflow`: the KFP v2 spec, read back with the kfp SDK, has ganpipe's
DAG, parameters and artifact wiring; its steps, run as the open-source KFP backend runs them, give
the outputs `ganpipe run` gives; a preempted Train resumes there from its checkpoints.

No cluster here (kfp.local's SubprocessRunner refuses container components and its DockerRunner
needs Docker), so `Backend` below plays the open-source backend (kubeflow/pipelines at 7b70c7b,
backend/src/v2), rule by rule:
- driver/driver.go calls driver/util.go `resolveContainerArgs` on the container's command and
  args: an argument containing "$.outputs" is left as it is, one starting with `{"IfPresent":` is
  resolved, every other gets its `{{$.inputs.parameters['name']}}` replaced; nothing else (no
  `Concat`).
- component/launcher_v2.go `NewLauncherV2` takes the first word as the command and the rest as
  arguments; `compileCmdAndArgs` replaces `{{$}}` in both and, in the arguments only, every key of
  `getPlaceholders` by plain string replacement: `{{$.inputs.artifacts['x'].uri|path}}`,
  `{{$.outputs.artifacts['x'].uri|path}}`, `{{$.inputs.parameters['x']}}`,
  `{{$.outputs.parameters['x'].output_file}}`. A path is `LocalPathForURI` (gs://b/k -> /gcs/b/k),
  rebased here under the pod's own directory.
- `execute` downloads the inputs to their local paths (`downloadArtifacts`), creates the outputs'
  parent directories, runs the command, and `executeV2` uploads the outputs only when it exited 0
  (`uploadOutputArtifacts` with componentSucceeded=false records the logs alone).
Each attempt runs in a fresh working directory and a fresh pod directory, deleted afterwards as a
lost pod's disk is. Whatever the backend would pass through literally fails the test.

kfp.local's own resolver (more lenient: it resolves Concat) is a second check: it must give the
same command lines.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml
from google.protobuf import json_format

kfp = pytest.importorskip("kfp")
from kfp import components as kfp_components  # noqa: E402
from kfp.local import placeholder_utils  # noqa: E402

from ganpipe.pipeline import execute  # noqa: E402
from ganpipe.pipeline.config import load_config  # noqa: E402
from ganpipe.infra.fingerprints import artifact_fingerprint  # noqa: E402
from test_train import checkpoint_values  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
IMAGE = "registry.example/ganpipe:1.0"
BUCKET = "gs://kfp-bucket"
# Small but whole: every component runs, Train long enough to move.
CONFIG = {
    "pipeline": {"name": "kfp_digits"},
    "beam": {"args": ["--direct_num_workers=1"]},  # reaches the data steps as --beam-arg
    "preprocess": {"image_size": 16},
    "classifier": {"epochs": 1, "width": 8, "feature_dim": 16},
    "train": {"network": {"width": 8}, "latent_dim": 8, "batch_size": 32, "steps": 20, "log_every": 10,
              "sample_every": 20, "checkpoint_every": 10},
    "evaluate": {"num_samples": 64, "no_worse_than_served": False},
    "export": {"force": True},
}
INPUT_PARAMETER = re.compile(r"\{\{\$\.inputs\.parameters\['(.+?)']}}")  # driver/util.go fullInputParameterRe
UNRESOLVED = ("{{$", '{"Concat"', '{"IfPresent"')


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    base = tmp_path_factory.mktemp("kfp")
    config_file = base / "config.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    spec_file = base / "pipeline.yaml"
    shared = base / "shared"  # ganpipe's --root: storage every step reaches (gs://... on a cluster)
    result = subprocess.run([sys.executable, "-m", "ganpipe", "compile", str(config_file), "--image", IMAGE,
                             "-o", str(spec_file), "--root", str(shared), "--no-caching"],
                            env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Served models go to {shared}/serving" in result.stdout and "(under --root)" in result.stdout
    return {"base": base, "config_file": str(config_file), "spec_file": str(spec_file), "shared": str(shared),
            "config": load_config(str(config_file))}


@pytest.mark.slow
def test_compiled_spec_loads_back_with_the_dag_parameters_and_wiring_of_the_pipeline(compiled):
    spec = kfp_components.load_component_from_file(compiled["spec_file"]).pipeline_spec
    config = compiled["config"]
    assert spec.pipeline_info.name == "kfp-digits"
    tasks = spec.root.dag.tasks
    nodes = {node.name: node for node in config.nodes}
    assert {task.task_info.name for task in tasks.values()} == set(nodes)
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    for task in tasks.values():
        node = nodes[task.task_info.name]
        producers = {tasks[name].task_info.name for name in task.dependent_tasks}
        assert producers == node.producers(), node.name
        wiring = {name: f"{tasks[a.task_output_artifact.producer_task].task_info.name}."
                        f"{a.task_output_artifact.output_artifact_key}" for name, a in task.inputs.artifacts.items()}
        assert wiring == dict(node.wiring), node.name
        params = json.loads(task.inputs.parameters["params"].runtime_value.constant.string_value)
        assert params == json.loads(json.dumps(config.parameters[node.section])), node.name
        assert task.caching_options.enable_cache is False
        component = spec.components[task.component_ref.name]
        assert set(component.output_definitions.artifacts) == {*node.component.outputs, "execution_record"}
        container = executors[component.executor_label]["container"]
        assert container["image"] == IMAGE
        assert container["command"][:4] == ["ganpipe", "execute", "--component", node.name]
        assert ("--durable-staging" in container["command"]) == (node.name == "Train")
    assert spec.components["comp-train"].output_definitions.artifacts["model"].artifact_type.schema_title == "system.Model"


def test_compile_without_image_or_with_a_bad_config_is_a_usage_error(tmp_path):
    from click.testing import CliRunner
    from ganpipe.pipeline import cli

    result = CliRunner().invoke(cli.main, ["compile", "-o", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "--image" in result.output
    result = CliRunner().invoke(cli.main, ["compile", "--image", IMAGE, "-o", str(tmp_path / "p.yaml"), "--root",
                                           "gs://b/r", "--set", "train.steps=0"])
    assert result.exit_code == 2 and "train.steps: 0 is below the minimum 1" in result.output
    assert not (tmp_path / "p.yaml").exists()


def compile_commands(tmp_path, *options):
    """`ganpipe compile` in process: (exit code, output, {step: its container command})."""
    from click.testing import CliRunner
    from ganpipe.pipeline import cli

    spec = tmp_path / "p.yaml"
    result = CliRunner().invoke(cli.main, ["compile", "--image", IMAGE, "-o", str(spec), *options])
    if result.exit_code:
        return result.exit_code, result.output, {}
    executors = yaml.safe_load(spec.read_text())["deploymentSpec"]["executors"]
    return 0, result.output, {name[len("exec-"):]: executor["container"]["command"]
                              for name, executor in executors.items()}


def test_compile_refuses_without_a_root_for_served_models_and_checkpoints(tmp_path):
    code, output, _ = compile_commands(tmp_path)
    assert code == 2 and "no place for served models and Train's checkpoints" in output
    code, output, _ = compile_commands(tmp_path, "--root", "relative/dir")
    assert code == 2 and "a relative path would resolve in each step's working directory" in output
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("options, root, source", [
    (["--pipeline-root", "gs://b/kfp"], "gs://b/kfp", "--pipeline-root, as no --root was given"),
    (["--pipeline-root", "gs://b/kfp", "--root", "gs://b/ganpipe"], "gs://b/ganpipe", "--root"),
])
def test_compile_says_where_served_models_and_checkpoints_go_and_every_step_gets_it(tmp_path, options, root,
                                                                                      source):
    code, output, commands = compile_commands(tmp_path, *options, "--set", "beam.args=[--direct_num_workers=2]")
    assert code == 0, output
    assert (f"Served models go to {root}/serving, Train's checkpoints to {root}/digits_cgan/Train/.staging "
            f"(under {source})") in output
    assert len(commands) == 6
    for step, command in commands.items():
        assert command[command.index("--pipeline-root") + 1] == root, step
        assert "--beam-arg=--direct_num_workers=2" in command, step
        assert not any("Concat" in part or "IfPresent" in part for part in command), step


class Backend:
    """The open-source KFP backend's way to run a compiled spec's tasks (see the module docstring):
    a bucket (a local directory standing for gs://kfp-bucket) and, per attempt, a pod."""

    def __init__(self, spec_file, base):
        self.spec = kfp_components.load_component_from_file(spec_file).pipeline_spec
        self.executors = json_format.MessageToDict(self.spec.deployment_spec)["executors"]
        self.base = base
        self.bucket = os.path.join(base, "bucket")
        self.attempts = 0

    def task_names(self):
        """Each task after the tasks it depends on (the spec's own dependencies)."""
        tasks, ordered = self.spec.root.dag.tasks, []
        while len(ordered) < len(tasks):
            ordered.append(min(name for name, task in tasks.items()
                               if name not in ordered and set(task.dependent_tasks) <= set(ordered)))
        return ordered

    def executor_input(self, name, run_id, parameters=None):
        """ExecutorInput of task ``name`` in run ``run_id``: the driver's output URIs
        (<pipeline root>/<run>/<task>/<output>), inputs from the producers' outputs."""
        task = self.spec.root.dag.tasks[name]
        component = self.spec.components[task.component_ref.name]
        uri = lambda producer, output: f"{BUCKET}/{run_id}/{producer}/{output}"
        artifact = lambda location: {"artifacts": [{"uri": location, "metadata": {}}]}
        values = {key: p.runtime_value.constant.string_value for key, p in task.inputs.parameters.items()}
        return {
            "inputs": {"parameterValues": {**values, **(parameters or {})},
                       "artifacts": {key: artifact(uri(a.task_output_artifact.producer_task,
                                                       a.task_output_artifact.output_artifact_key))
                                     for key, a in task.inputs.artifacts.items()}},
            "outputs": {"artifacts": {key: artifact(uri(name, key)) for key in component.output_definitions.artifacts},
                        "outputFile": f"/tmp/kfp_outputs/{name}/output_metadata.json"},
        }

    def argv(self, name, executor_input, pod):
        """The driver's then the launcher's substitution of the task's container command."""
        task = self.spec.root.dag.tasks[name]
        container = self.executors[self.spec.components[task.component_ref.name].executor_label]["container"]
        parameters = executor_input["inputs"]["parameterValues"]
        resolved = []
        for arg in container.get("command", []) + container.get("args", []):  # driver: resolveContainerArgs
            assert not arg.strip().startswith('{"IfPresent":'), arg  # resolved there, but ganpipe needs none
            resolved.append(arg if "$.outputs" in arg else INPUT_PARAMETER.sub(lambda m: parameters[m.group(1)], arg))
        placeholders = {}  # launcher: getPlaceholders
        for kind in ("inputs", "outputs"):
            for key, artifacts in executor_input[kind]["artifacts"].items():
                uri = artifacts["artifacts"][0]["uri"]
                placeholders[f"{{{{$.{kind}.artifacts['{key}'].uri}}}}"] = uri
                placeholders[f"{{{{$.{kind}.artifacts['{key}'].path}}}}"] = self.local_path(pod, uri)
        placeholders.update({f"{{{{$.inputs.parameters['{key}']}}}}": value for key, value in parameters.items()})
        whole = json.dumps(executor_input)
        command = resolved[0].replace("{{$}}", whole)  # compileCmdAndArgs: the command gets {{$}} only
        arguments = []
        for arg in resolved[1:]:
            arg = arg.replace("{{$}}", whole)
            for placeholder, value in placeholders.items():
                arg = arg.replace(placeholder, value)
            arguments.append(arg)
        left = [arg for arg in [command, *arguments] if any(mark in arg for mark in UNRESOLVED)]
        assert not left, f"{name}: the backend passes these through literally: {left}"
        return [command, *arguments]

    @staticmethod
    def local_path(pod, uri):
        assert uri.startswith("gs://"), uri
        return os.path.join(pod, "gcs", uri[len("gs://"):])  # LocalPathForURI, under this pod

    def bucket_path(self, uri):
        return os.path.join(self.bucket, uri[len(BUCKET + "/"):])

    def start(self, name, run_id, parameters=None):
        """Downloads the inputs into a new pod and starts the task's command there (in a fresh
        working directory); returns (process, attempt) for ``finish``."""
        self.attempts += 1
        pod = os.path.join(self.base, f"pod-{self.attempts}")
        workdir = os.path.join(pod, "workdir")
        os.makedirs(workdir)
        executor_input = self.executor_input(name, run_id, parameters)
        for artifacts in executor_input["inputs"]["artifacts"].values():  # downloadArtifacts
            uri = artifacts["artifacts"][0]["uri"]
            copy(self.bucket_path(uri), self.local_path(pod, uri))
        for artifacts in executor_input["outputs"]["artifacts"].values():  # prepareOutputFolders
            os.makedirs(os.path.dirname(self.local_path(pod, artifacts["artifacts"][0]["uri"])), exist_ok=True)
        command, *arguments = self.argv(name, executor_input, pod)
        assert command == "ganpipe", command
        log = open(os.path.join(self.base, f"{name}-{self.attempts}.log"), "w+")
        process = subprocess.Popen([sys.executable, "-m", "ganpipe", *arguments], cwd=workdir, env=ENVIRONMENT,
                                   stdout=log, stderr=subprocess.STDOUT)
        return process, {"pod": pod, "log": log, "executor_input": executor_input, "name": name}

    def finish(self, process, attempt, timeout=900):
        """Waits; uploads the outputs only on exit 0; the pod's disk goes. Returns (code, log)."""
        code = process.wait(timeout=timeout)
        if code == 0:  # executeV2: uploadOutputArtifacts only after the command succeeded
            for artifacts in attempt["executor_input"]["outputs"]["artifacts"].values():
                uri = artifacts["artifacts"][0]["uri"]
                copy(self.local_path(attempt["pod"], uri), self.bucket_path(uri))
        shutil.rmtree(attempt["pod"])
        attempt["log"].seek(0)
        output = attempt["log"].read()
        attempt["log"].close()
        return code, output

    def run(self, name, run_id, parameters=None):
        return self.finish(*self.start(name, run_id, parameters))


def copy(source, target):
    if os.path.isdir(source):
        shutil.copytree(source, target)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)


@pytest.fixture(scope="module")
def backend_run(compiled):
    """All six tasks of run-1, each run as the backend runs it; {task: {output: path in the bucket}}."""
    backend = Backend(compiled["spec_file"], str(compiled["base"] / "backend"))
    outputs = {}
    for name in backend.task_names():
        code, log = backend.run(name, "run-1")
        assert code == 0, f"{name}: {log[-3000:]}"
        outputs[name] = {key: backend.bucket_path(f"{BUCKET}/run-1/{name}/{key}")
                         for key in backend.executor_input(name, "run-1")["outputs"]["artifacts"]}
    return {"backend": backend, "outputs": outputs}


@pytest.mark.slow
def test_kfp_local_resolves_every_command_line_as_the_backend_does(compiled):
    """kfp.local's resolver (the second check) gives the same command lines as the backend rules:
    nothing in the spec depends on what only the lenient resolver resolves."""
    backend = Backend(compiled["spec_file"], str(compiled["base"] / "resolve"))
    pod = "/pod"
    for name in backend.task_names():
        executor_input = backend.executor_input(name, "run-1")
        for kind in ("inputs", "outputs"):  # kfp.local reads the local path from the artifact's uri
            for artifacts in executor_input[kind]["artifacts"].values():
                artifacts["artifacts"][0]["uri"] = backend.local_path(pod, artifacts["artifacts"][0]["uri"])
                artifacts["artifacts"][0]["type"] = {"schemaTitle": "system.Artifact"}
                artifacts["artifacts"][0]["name"] = "x"
        task = backend.spec.root.dag.tasks[name]
        container = backend.executors[backend.spec.components[task.component_ref.name].executor_label]["container"]
        local = placeholder_utils.replace_placeholders(container["command"], executor_input, "kfp-digits", name,
                                                       BUCKET, "run-1")
        assert local == backend.argv(name, backend.executor_input(name, "run-1"), pod), name


@pytest.mark.slow
def test_compiled_steps_run_by_the_backend_give_the_outputs_of_ganpipe_run(compiled, backend_run):
    base = compiled["base"]
    root = str(base / "ganpipe_root")
    result = subprocess.run([sys.executable, "-m", "ganpipe", "run", compiled["config_file"], "--root", root],
                            env=ENVIRONMENT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = {node.name.lower(): node.name for node in compiled["config"].nodes}
    local = {names[task]: outputs for task, outputs in backend_run["outputs"].items()}

    def published(component, output):
        directory = os.path.join(root, "kfp_digits", component, output)
        [execution] = os.listdir(directory)
        return os.path.join(directory, execution)

    # Data steps: byte-identical artifacts.
    for component, output in (("Ingest", "examples"), ("Preprocess", "examples"), ("Preprocess", "schema"),
                              ("Preprocess", "statistics")):
        assert artifact_fingerprint(local[component][output]) == artifact_fingerprint(published(component, output)), \
            f"{component}.{output}"
    # Train: the same weights, optimizer state and step; its staging under the root is gone.
    for name, value in checkpoint_values(published("Train", "model") + "/checkpoints").items():
        np.testing.assert_array_equal(checkpoint_values(local["Train"]["model"] + "/checkpoints")[name], value,
                                      err_msg=name)
    assert os.listdir(os.path.join(compiled["shared"], "kfp_digits", "Train", ".staging")) == []
    # Classifier: the same weights (its .keras config holds Python object ids, which differ
    # between processes, so its file bytes cannot be compared).
    classifiers = [keras.models.load_model(os.path.join(path, "classifier.keras")) for path in
                   (local["Classifier"]["classifier"], published("Classifier", "classifier"))]
    for a, b in zip(*(model.get_weights() for model in classifiers)):
        np.testing.assert_array_equal(a, b)
    # Evaluate: the same report. Its values are not compared: its real examples come from a
    # `shuffle(seed=...)` that also depends on the process-global TF seed, which Train's
    # `keras.utils.set_random_seed` leaves set inside `ganpipe run` and a fresh process lacks
    # (reported; the real-vs-real baselines differ as well).
    with open(os.path.join(local["Evaluate"]["evaluation"], "metrics.json")) as f:
        kfp_report = json.load(f)
    with open(os.path.join(published("Evaluate", "evaluation"), "metrics.json")) as f:
        run_report = json.load(f)
    assert kfp_report["metrics"].keys() == run_report["metrics"].keys()
    assert kfp_report["main_metric"] == run_report["main_metric"]
    # Every step's uploaded execution record is COMPLETE.
    for component, outputs in local.items():
        record = execute.read_record(outputs["execution_record"])
        assert record["state"] == execute.COMPLETE and record["component"] == component
    # Export: a SavedModel under the root the spec was compiled with, not in the pod.
    with open(os.path.join(local["Export"]["pushed_model"], "pushed.json")) as f:
        pushed = json.load(f)
    assert pushed["pushed"] and pushed["destination"].startswith(os.path.join(compiled["shared"], "serving"))
    assert os.path.isfile(os.path.join(pushed["destination"], "saved_model.pb"))


@pytest.mark.slow
def test_a_train_preempted_on_the_backend_resumes_from_its_checkpoint_on_the_retry(compiled, backend_run):
    """A resubmitted run (run-2: new output URIs) whose Train pod gets SIGTERM: the launcher uploads
    nothing and the pod's disk goes, but the checkpoints are in the durable staging directory
    under the root, and the retry resumes there and ends with the weights of an uninterrupted run."""
    backend = backend_run["backend"]
    for run, name in ((run, name) for run in ("run-2", "run-3") for name in ("ingest", "preprocess", "classifier")):
        copy(os.path.join(backend.bucket, "run-1", name), os.path.join(backend.bucket, run, name))  # upstream reused
    params = {**compiled["config"].parameters["train"], "steps": 300, "checkpoint_every": 5}
    parameters = {"params": json.dumps(params, sort_keys=True)}
    staging = os.path.join(compiled["shared"], "kfp_digits", "Train", ".staging")

    process, attempt = backend.start("train", "run-2", parameters)
    deadline = time.monotonic() + 600
    while not any(os.path.exists(os.path.join(staging, key, "model", "checkpoints", "checkpoint"))
                  for key in os.listdir(staging)) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint in the durable staging directory"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    code, log = backend.finish(process, attempt)
    assert code == 1 and "stopped by SIGTERM at step" in log, log[-3000:]
    stopped = int(log.split("stopped by SIGTERM at step ", 1)[1].split()[0])
    assert not os.path.exists(os.path.join(backend.bucket, "run-2", "train")), "uploaded after a failure"

    code, log = backend.run("train", "run-2", parameters)
    assert code == 0, log[-3000:]
    resumed = int(log.split("resumed from ", 1)[1].split(" at step ", 1)[1].split()[0])
    assert 0 < resumed == stopped < params["steps"]
    assert os.listdir(staging) == []

    code, log = backend.run("train", "run-3", parameters)  # uninterrupted, from nothing
    assert code == 0 and "resumed from" not in log, log[-3000:]
    expected = checkpoint_values(os.path.join(backend.bucket, "run-3", "train", "model", "checkpoints"))
    actual = checkpoint_values(os.path.join(backend.bucket, "run-2", "train", "model", "checkpoints"))
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


def test_compiled_evaluate_measures_the_served_version_and_export_pushes_only_a_model_no_worse(
        tmp_path, tmp_path_factory):
    """No metadata store resolves Evaluate's `served` under Kubeflow: its step finds the version
    under <root>/serving/<model_name> itself (`--served-from`, set by the compiler), so a second
    model no worse than the first is pushed as version 2 and a clearly worse third is refused."""
    from test_export import BLESSING, LATENT, NORMALIZATION, run_export, write_model
    from ganpipe.components import evaluate
    from ganpipe.components.base import Artifact
    from ganpipe.ganmodels import build_networks

    root = tmp_path / "root"
    code, output, commands = compile_commands(tmp_path, "--root", str(root))
    assert code == 0, output
    served_from = commands["evaluate"][commands["evaluate"].index("--served-from") + 1]
    assert served_from == str(root / "serving" / "digits_cgan")
    assert [step for step, command in commands.items() if "--served-from" in command] == ["evaluate"]

    generator, _ = build_networks("mlp", (3,), latent_dim=LATENT, hidden=(4,))
    candidates = [write_model(str(tmp_path / name), generator, {"family": "mlp", "data_kind": "vector",
                                                                 "data_shape": [3], "normalization": NORMALIZATION,
                                                                 "steps": steps})
                  for steps, name in enumerate(("first", "second", "third"))]  # three models (fingerprints)
    schema = {"kind": "vector", "shape": [3], "num_classes": 0, "normalization": NORMALIZATION}

    def measured_beside(model_dir):
        """What Evaluate's step run as `ganpipe execute --served-from` measures the model beside."""
        inputs = {"model": Artifact("Model", model_dir)}
        with execute.served_input(served_from, inputs, print):
            return evaluate.what_is_served(inputs.get("served"))

    def push(model_dir, difference):
        """Export of a model Evaluate measured with this paired FCD difference (± 0.2) to the served."""
        gate = {"check": evaluate.GATE, "metric": "fcd", "value": 5.0, "level": 0.05, "better": "lower",
                "served": measured_beside(model_dir), "difference": difference, "difference_std": 0.2,
                "passed": True, "reason": f"fcd difference {difference} ± 0.2"}
        return run_export(model_dir, schema, tmp_path_factory, blessing={**BLESSING, "checks": [gate]},
                          model_fingerprint="", model_name="digits_cgan", export_base=str(root / "serving")).properties

    first, second, third = candidates
    assert measured_beside(first) is None and push(first, None)["version"] == 1
    assert measured_beside(second) == {"version": 1, "destination": os.path.join(served_from, "1"),
                                       "model_fingerprint": artifact_fingerprint(first)}
    assert push(second, 0.0)["version"] == 2
    assert measured_beside(second)["version"] == 1  # its own version skipped, as the resolver does
    assert measured_beside(third)["version"] == 2
    refused = push(third, 1.0)
    assert refused["pushed"] is False and refused["reason"] == "not pushed: fcd difference 1.0 ± 0.2"
    assert sorted(os.listdir(root / "serving" / "digits_cgan")) == ["1", "2"]


def test_served_from_on_a_step_that_measures_no_served_model_is_a_usage_error(tmp_path):
    from click.testing import CliRunner
    from ganpipe.pipeline import cli

    result = CliRunner().invoke(cli.main, ["execute", "--component", "Export", "--served-from", str(tmp_path),
                                           "--output", f"pushed_model={tmp_path / 'out'}"])
    assert result.exit_code == 2 and "--served-from: Export measures no model beside the served one" in result.output
    assert not (tmp_path / "out").exists()
