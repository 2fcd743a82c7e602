"""Config loading: YAML + --set overrides, every mistake named before anything runs."""
import os
import subprocess
import sys

import pytest

from ganpipe.components.base import Component, Parameter
from ganpipe.pipeline import config as config_module
from ganpipe.pipeline.config import ConfigError, load_config
from ganpipe.pipeline.dag import Node


def _noop(inputs, outputs, params, ctx):
    pass


NODES = (
    Node.of(Component("Train", {}, {"model": "Model"}, (
        Parameter("steps", int, 100, min=1, max=10_000),
        Parameter("learning_rate", float, 2e-4, min=0.0),
        Parameter("loss", str, "non_saturating", choices=("non_saturating", "hinge", "wasserstein")),
        Parameter("hidden", list, [64, 64]),
        Parameter("seed", int, None, nullable=True),
    ), _noop)),
    Node.of(Component("Export", {"model": "Model"}, {"pushed": "PushedModel"},
                      (Parameter("model_name", str, "gan"),), _noop), {"model": "Train.model"}),
)


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(path=None, *overrides):
    return load_config(path, overrides, nodes=NODES)


def test_defaults_without_a_file(monkeypatch, tmp_path):
    monkeypatch.delenv(config_module.ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    config = load()
    assert config.name == "digits_dcgan"
    assert config.root == os.path.join(str(tmp_path), "ganpipe_runs")
    assert config.beam_args == []
    assert config.parameters == {
        "train": {"steps": 100, "learning_rate": 2e-4, "loss": "non_saturating", "hidden": [64, 64], "seed": None},
        "export": {"model_name": "gan"}}
    monkeypatch.setenv(config_module.ROOT_ENV, str(tmp_path / "elsewhere"))
    assert load().root == str(tmp_path / "elsewhere")


def test_file_and_overrides(tmp_path):
    path = write(tmp_path, """
pipeline: {name: mnist_wgan, root: runs}
beam: {args: ["--direct_num_workers=2"]}
train:
  steps: 200
  learning_rate: 1     # an int where a float is wanted is widened
  loss: hinge
""")
    config = load(path, "train.steps=300", "train.hidden=[8, 16]", "export.model_name=digits",
                  "train.seed=7", "pipeline.name=other")
    assert config.name == "other"
    assert config.root == os.path.abspath("runs")
    assert config.beam_args == ["--direct_num_workers=2"]
    assert config.parameters["train"] == {"steps": 300, "learning_rate": 1.0, "loss": "hinge",
                                          "hidden": [8, 16], "seed": 7}
    assert isinstance(config.parameters["train"]["learning_rate"], float)
    assert config.parameters["export"] == {"model_name": "digits"}
    assert config.as_dict()["train"]["steps"] == 300


@pytest.mark.parametrize("text, overrides, message", [
    ("trian: {steps: 3}", (), "unknown section 'trian'; allowed sections are pipeline, beam, train, export"),
    ("train: {stepz: 3}", (), "train.stepz: unknown key; allowed keys are hidden, learning_rate, loss, seed, steps"),
    ("train: {steps: many}", (), "train.steps: expected int, got str 'many'"),
    ("train: {steps: true}", (), "train.steps: expected int, got True"),
    ("train: {steps: 0}", (), "train.steps: 0 is below the minimum 1"),
    ("train: {steps: 20000}", (), "train.steps: 20000 is above the maximum 10000"),
    ("train: {loss: lsgan}", (), "train.loss: 'lsgan' is not one of non_saturating, hinge, wasserstein"),
    ("train: {steps: }", (), "train.steps: must not be empty"),
    ("train: [1, 2]", (), "train: must be a mapping"),
    ("- a\n- b", (), "the top level must be a mapping"),
    ("train: {steps: [1", (), "not valid YAML"),
    ("pipeline: {nme: x}", (), "pipeline.nme: unknown key; allowed keys are name, root, metadata, dag"),
    ("pipeline: {name: 'a/b'}", (), "pipeline.name: 'a/b' must be letters"),
    ("pipeline: {name: 3}", (), "pipeline.name: expected a non-empty string"),
    ("beam: {args: --x}", (), "beam.args: expected a list of strings"),
    ("beam: {workers: 2}", (), "beam.workers: unknown key; allowed keys are args"),
    ("", ("train.steps=-5",), "train.steps: -5 is below the minimum 1"),
    ("", ("trainsteps=5",), "expected section.key=value"),
    ("", ("train.steps",), "expected section.key=value"),
    ("", ("evaluate.x=1",), "unknown section 'evaluate'"),
    ("", ("train.hidden=[1",), "value is not valid YAML"),
    ("", ("pipeline.dag=nowhere",), "is not of the form 'package.module:ATTRIBUTE'"),
])
def test_errors_name_the_key_and_what_is_allowed(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, overrides, nodes=None if "dag" in "".join(overrides) else NODES)
    assert message in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load(str(tmp_path / "missing.yaml"))


def test_dag_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "my_pipeline.py").write_text(
        "from ganpipe.components.base import Component, Parameter\n"
        "from ganpipe.pipeline.dag import Node\n"
        "NODES = [Node.of(Component('Only', {}, {'out': 'X'}, (Parameter('n', int, 1),), print))]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_config(None, ["pipeline.dag=my_pipeline:NODES", "only.n=4"])
    assert [n.name for n in config.nodes] == ["Only"] and config.parameters == {"only": {"n": 4}}
    with pytest.raises(ConfigError, match="cannot load 'my_pipeline:MISSING'"):
        load_config(None, ["pipeline.dag=my_pipeline:MISSING"])


def test_config_errors_do_not_import_tensorflow(tmp_path):
    """The default DAG's unknown section is reported without loading any component."""
    code = ("import sys\nfrom ganpipe.pipeline.config import load_config, ConfigError\n"
            "try:\n    load_config(None, ['nosuch.key=1'])\nexcept ConfigError as e:\n    print(e)\n"
            "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__))).stdout.split("\n")
    assert "unknown section 'nosuch'" in out[0] and "ingest, preprocess, classifier, train" in out[0]
    assert out[1] == "False"
