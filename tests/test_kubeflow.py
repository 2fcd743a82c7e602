"""`ganpipe compile --target kubeflow`: the KFP v2 spec, read back with the kfp SDK, has ganpipe's
DAG, parameters and artifact wiring; and its steps' command lines, run in DAG order, give the
outputs `ganpipe run` gives.

kfp.local cannot run these steps here: its SubprocessRunner accepts only lightweight Python
components and refuses container components, and its DockerRunner needs Docker. So the harness
below plays the KFP launcher: it resolves each task's placeholders with kfp.local's own resolver
(artifact paths under a pipeline root) and runs the command as a subprocess, in the dependency
order the spec states.
"""
import json
import os
import subprocess
import sys

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

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO}
IMAGE = "registry.example/ganpipe:1.0"
# Small but whole: every component runs, Train long enough to move.
CONFIG = {
    "pipeline": {"name": "kfp_digits"},
    "preprocess": {"image_size": 16},
    "classifier": {"epochs": 1, "width": 8, "feature_dim": 16},
    "train": {"network": {"width": 8}, "latent_dim": 8, "batch_size": 32, "steps": 20, "log_every": 10,
              "sample_every": 20, "checkpoint_every": 10},
    "evaluate": {"num_samples": 64, "no_worse_than_served": False},
    "export": {"force": True},
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    base = tmp_path_factory.mktemp("kfp")
    config_file = base / "config.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    spec_file = base / "pipeline.yaml"
    serving = base / "serving_root"
    result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "compile", str(config_file), "--image",
                             IMAGE, "-o", str(spec_file), "--serving-root", str(serving), "--no-caching"],
                            env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"base": base, "config_file": str(config_file), "spec_file": str(spec_file), "serving": str(serving),
            "config": load_config(str(config_file))}


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
    assert spec.components["comp-train"].output_definitions.artifacts["model"].artifact_type.schema_title == "system.Model"


def test_compile_without_image_or_with_a_bad_config_is_a_usage_error(tmp_path):
    from click.testing import CliRunner
    from ganpipe.pipeline import cli

    result = CliRunner().invoke(cli.main, ["compile", "-o", str(tmp_path / "p.yaml")])
    assert result.exit_code == 2 and "--image" in result.output
    result = CliRunner().invoke(cli.main, ["compile", "--image", IMAGE, "-o", str(tmp_path / "p.yaml"),
                                           "--set", "train.steps=0"])
    assert result.exit_code == 2 and "train.steps: 0 is below the minimum 1" in result.output
    assert not (tmp_path / "p.yaml").exists()


def dependency_order(tasks):
    """Task names, each after the tasks it depends on (the spec's own dependencies)."""
    ordered, placed = [], set()
    while len(ordered) < len(tasks):
        ready = sorted(name for name, task in tasks.items()
                       if name not in placed and set(task.dependent_tasks) <= placed)
        assert ready, "the compiled DAG has a cycle"
        ordered.append(ready[0])
        placed.add(ready[0])
    return ordered


def run_like_kfp(spec_file, pipeline_root):
    """Every task's container command, placeholders resolved by kfp.local, run as a subprocess in
    dependency order; returns {task: {output: path}}. `ganpipe` is this tree's CLI."""
    spec = kfp_components.load_component_from_file(spec_file).pipeline_spec
    tasks = spec.root.dag.tasks
    executors = json_format.MessageToDict(spec.deployment_spec)["executors"]
    outputs = {}
    for name in dependency_order(tasks):
        task = tasks[name]
        component = spec.components[task.component_ref.name]
        artifact = lambda uri, schema: {"artifacts": [{"name": os.path.basename(uri), "uri": uri, "metadata": {},
                                                       "type": {"schemaTitle": schema}}]}
        inputs = {key: artifact(outputs[a.task_output_artifact.producer_task][a.task_output_artifact.output_artifact_key],
                                "system.Artifact") for key, a in task.inputs.artifacts.items()}
        outputs[name] = {key: os.path.join(pipeline_root, name, key) for key in component.output_definitions.artifacts}
        executor_input = {
            "inputs": {"parameterValues": {key: p.runtime_value.constant.string_value
                                                   for key, p in task.inputs.parameters.items()},
                       "artifacts": inputs},
            "outputs": {"artifacts": {key: artifact(uri, "system.Artifact") for key, uri in outputs[name].items()},
                        "outputFile": os.path.join(pipeline_root, name, "executor_output.json")},
        }
        command = list(executors[component.executor_label]["container"]["command"])
        command = placeholder_utils.replace_placeholders(command, executor_input, "kfp-digits", name, pipeline_root,
                                                         "job-1")
        assert command[0] == "ganpipe"
        result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", *command[1:]], env=ENVIRONMENT,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{name}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return outputs


def test_compiled_steps_run_in_dag_order_give_the_outputs_of_ganpipe_run(compiled):
    base = compiled["base"]
    kfp_outputs = run_like_kfp(compiled["spec_file"], str(base / "kfp_root"))

    root = str(base / "ganpipe_root")
    result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "run", compiled["config_file"],
                             "--root", root], env=ENVIRONMENT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = {node.name.lower(): node.name for node in compiled["config"].nodes}
    local = {names[task]: outputs for task, outputs in kfp_outputs.items()}

    def published(component, output):
        directory = os.path.join(root, "kfp_digits", component, output)
        [execution] = os.listdir(directory)
        return os.path.join(directory, execution)

    # Data steps: byte-identical artifacts.
    for component, output in (("Ingest", "examples"), ("Preprocess", "examples"), ("Preprocess", "schema"),
                              ("Preprocess", "statistics")):
        assert artifact_fingerprint(local[component][output]) == artifact_fingerprint(published(component, output)), \
            f"{component}.{output}"
    # Train: the same weights, optimizer state and step.
    for name, value in checkpoint_values(published("Train", "model") + "/checkpoints").items():
        np.testing.assert_array_equal(checkpoint_values(local["Train"]["model"] + "/checkpoints")[name], value,
                                      err_msg=name)
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
    # Every step wrote a COMPLETE execution record beside its outputs.
    for component, outputs in local.items():
        record = execute.read_record(outputs["execution_record"])
        assert record["state"] == execute.COMPLETE and record["component"] == component
    # Export: a SavedModel under the serving root the spec was compiled with.
    with open(os.path.join(local["Export"]["pushed_model"], "pushed.json")) as f:
        pushed = json.load(f)
    assert pushed["pushed"] and pushed["destination"].startswith(compiled["serving"])
