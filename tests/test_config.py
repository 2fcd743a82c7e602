"""Config loading: YAML + --set overrides, every mistake named before anything runs."""
import os
import subprocess
import sys

import pytest

from ganpipe.components.base import Component, Parameter
from ganpipe.pipeline import config as config_module
from ganpipe.pipeline.config import ConfigError, load_config
from ganpipe.pipeline.dag import Node
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    assert config.name == "digits_cgan"
    assert config.root == os.path.join(str(tmp_path), "ganpipe_runs")
    assert config.beam_args == []
    assert config.parameters == {
        "train": {"steps": 100, "learning_rate": 2e-4, "loss": "non_saturating", "hidden": [64, 64], "seed": None},
        "export": {"model_name": "gan"}}
    monkeypatch.setenv(config_module.ROOT_ENV, str(tmp_path / "elsewhere"))
    assert load().root == str(tmp_path / "elsewhere")


def test_the_built_in_run_is_the_shipped_digits_config_and_a_config_file_keeps_the_parameter_defaults(tmp_path):
    built_in = load_config(None, ["train.steps=5"]).parameters["train"]
    assert (built_in["family"], built_in["batch_size"], built_in["ema_decay"], built_in["steps"]) == (
        "cgan", 128, 0.999, 5)
    shipped = load_config(config_module.BUILT_IN_CONFIG)
    assert shipped.as_dict() == load_config(None).as_dict()
    assert os.path.samefile(config_module.BUILT_IN_CONFIG, os.path.join(REPOSITORY, "configs", "digits.yaml"))
    assert load_config(None, ["train.family=dcgan"]).parameters["train"]["family"] == "dcgan"
    from_file = load_config(write(tmp_path, "train: {steps: 5}\n")).parameters["train"]
    assert (from_file["family"], from_file["batch_size"], from_file["ema_decay"]) == ("dcgan", 64, None)
    # Another DAG (here the toy one, whose train section has no family) does not get the built-in run,
    # whether given to load_config or named by pipeline.dag.
    assert "family" not in load().parameters["train"]
    assert "family" not in load_config(None, ["pipeline.dag=test_config:NODES"]).parameters["train"]


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
    ("trian: {steps: 3}", (), "unknown section 'trian' (did you mean 'train'?); allowed sections are pipeline, beam, train, export"),
    ("train: {stepz: 3}", (), "train.stepz: unknown key (did you mean 'steps'?); allowed keys are hidden, learning_rate, loss, seed, steps"),
    ("train: {steps: many}", (), "train.steps: expected int, got str 'many'"),
    ("train: {steps: true}", (), "train.steps: expected int, got True"),
    ("train: {steps: 0}", (), "train.steps: 0 is below the minimum 1"),
    ("train: {steps: 20000}", (), "train.steps: 20000 is above the maximum 10000"),
    ("train: {loss: lsgan}", (), "train.loss: 'lsgan' is not one of non_saturating, hinge, wasserstein"),
    ("train: {steps: }", (), "train.steps: must not be empty"),
    ("train: [1, 2]", (), "train: must be a mapping"),
    ("- a\n- b", (), "the top level must be a mapping"),
    ("train: {steps: [1", (), "not valid YAML"),
    ("pipeline: {nme: x}", (), "pipeline.nme: unknown key (did you mean 'name'?); allowed keys are dag, metadata, name, root"),
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


# ----------------------------------------------------------------- the real pipeline's specs


@pytest.mark.parametrize("overrides, message", [
    (["train.family=dcgann"], "train.family: unknown family 'dcgann' (did you mean 'dcgan'?)"),
    (["train.network={widthh: 3}"], "train.network.widthh: unknown key (did you mean 'width'?)"),
    (["train.network={width: 0}"], "train.network.width: 0 is below the minimum 1"),
    (["train.network.width=0"], "train.network.width: 0 is below the minimum 1"),
    (["train.family=cgan", "train.network.generator_conditioning=multiplyy"],
     "train.network.generator_conditioning: 'multiplyy' is not one of concat, multiply (did you mean 'multiply'?)"),
    (["train.family=mlp", "train.network.width=8"], "train.network.width: unknown key; allowed keys are dropout"),
    (["evaluate.main_metric=foo"], "evaluate.main_metric: 'foo' is not one of auto, fcd"),
    (["evaluate.main_metric=fcdd"], "(did you mean 'fcd'?)"),
    (["ingest.source=imagez:/x"], "ingest.source: unknown source kind 'imagez' in 'imagez:/x'; use one of digits"),
    (["ingest.source=imagez:/x"], "csv:<file> (did you mean 'images'?)"),
    (["ingest.source=csv"], "ingest.source: 'csv' needs a path or name: csv:<file>"),
    (["ingest.source=digits:/x"], "ingest.source: 'digits' takes no argument"),
    (["train.stepz=3"], "train.stepz: unknown key (did you mean 'steps'?)"),
    (["trian.steps=3"], "unknown section 'trian' (did you mean 'train'?)"),
    (["pipeline.nmae=x"], "pipeline.nmae: unknown key (did you mean 'name'?)"),
    (["train.steps=1.5"], "train.steps: expected int, got float 1.5"),
    (["train.d_learning_rate=2e-4x"], "train.d_learning_rate: expected float, got str '2e-4x'"),
    (["train.steps=-1e3"], "train.steps: -1000 is below the minimum 1"),
])
def test_default_pipeline_rejects_before_anything_runs(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value)


def test_floats_in_e_notation_and_dotted_overrides():
    config = load_config(None, ["train.d_learning_rate=2e-4", "train.g_learning_rate=1E-3", "train.steps=1e3",
                                "train.epochs=2.5e0", "evaluate.num_samples=1000.0", "train.network.width=64"])
    train = config.parameters["train"]
    assert (train["d_learning_rate"], train["g_learning_rate"]) == (0.0002, 0.001)
    assert train["steps"] == 1000 and isinstance(train["steps"], int)
    assert train["epochs"] == 2.5 and config.parameters["evaluate"]["num_samples"] == 1000
    from ganpipe.components import specs

    family_defaults = {p.name: p.default for p in specs.FAMILY_NETWORKS[train["family"]]}
    assert family_defaults["width"] == 32 and train["network"] == {**family_defaults, "width": 64}


def test_network_is_deep_merged_with_the_family_defaults(tmp_path):
    path = write(tmp_path, "train:\n  family: lapgan\n  network: {spectral_norm: true}\n")
    network = load_config(path, ["train.network.levels=2"]).parameters["train"]["network"]
    assert network == {"levels": 2, "width": 32, "hidden": [512, 512], "dropout": 0.0, "spectral_norm": True}
    with pytest.raises(ConfigError, match="train.network: must be a mapping"):
        load_config(write(tmp_path, "train: {network: 3}\n"), ["train.network.width=64"])


def test_a_registered_family_is_accepted(monkeypatch):
    from ganpipe.components import specs

    monkeypatch.setitem(specs.FAMILY_NETWORKS, "tiny", (Parameter("units", int, 8, min=1),))
    assert load_config(None, ["train.family=tiny"]).parameters["train"]["network"] == {"units": 8}
    with pytest.raises(ConfigError, match="train.network.units: expected int"):
        load_config(None, ["train.family=tiny", "train.network.units=many"])


def test_family_schemas_match_the_builders():
    """Every option a schema allows is one the family's builder (or GAN class) takes, with its default
    (width aside: 32 for CPU-sized runs), and every builder option but the weight penalties is listed."""
    import inspect

    from ganpipe import ganmodels
    from ganpipe.components import specs
    from ganpipe.ganmodels.srgan import SRGAN

    assert set(specs.FAMILY_NETWORKS) == set(ganmodels.FAMILIES)
    for family, schema in specs.FAMILY_NETWORKS.items():
        signature = dict(inspect.signature(ganmodels.FAMILIES[family]).parameters)
        if family == "srgan":
            signature.update(inspect.signature(SRGAN.__init__).parameters)
        options = {name: p.default for name, p in signature.items()
                   if name not in ("self", "data_shape", "latent_dim", "num_classes", "l1", "l2", "generator",
                                   "discriminator", "kwargs")}
        defaults = {p.name: p.default for p in schema}
        assert set(defaults) == set(options), family
        for name, default in defaults.items():
            builder = options[name]
            expected = 32 if name == "width" else None if name == "scale" else (
                list(builder) if isinstance(builder, tuple) else builder)
            assert default == expected, (family, name)


def test_main_metric_choices_are_the_metrics_evaluate_can_compare():
    from ganpipe.components import specs
    from ganpipe.components.evaluate import FRECHET_NAMES, rename
    from ganpipe.components.evaluate.synthetic import SYNTHETIC_METRICS
    from ganpipe.ganmodels import metrics

    once = {key for name in SYNTHETIC_METRICS for key in metrics.get(name).directions}
    comparable = {rename(key, space) for key, way in metrics.DIRECTIONS.items() if way != "neither" and key not in once
                  for space in FRECHET_NAMES}
    assert set(specs.MAIN_METRICS) == comparable | {"auto"}


REFUSED = [
    ("export.model_name=../../x", "export.model_name: '../../x' must be a plain directory name"),
    ("train.diffaugment=bogus", "train.diffaugment: 'bogus': give one or more of color, translation, cutout"),
    ("preprocess.background=[1,2]", "preprocess.background: [1, 2] is not a grey level 0..255 or [R, G, B]"),
    ("ingest.label_names=[a,b,a]", "ingest.label_names: 'a' given more than once"),
    ("pipeline.name=metadata.sqlite", "pipeline.name: 'metadata.sqlite' is a name the root holds for itself"),
]


@pytest.mark.parametrize("override, message", REFUSED)
def test_values_a_step_would_refuse_exit_2_before_any_step_dry_run_included(tmp_path, override, message):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    for dry_run in ([], ["--dry-run"]):
        result = subprocess.run([sys.executable, "-m", "ganpipe.pipeline.cli", "run", *dry_run, "--root",
                                 str(tmp_path / "root"), "--set", override], env=env, capture_output=True, text=True)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("override, message", REFUSED + [
    ("export.model_name=..", "export.model_name: '..' must be a plain directory name"),
    ("export.model_name=a\\b", "must be a plain directory name"),
    ("train.diffaugment=color,cutot", "(did you mean 'cutout'?)"),
    ("train.diffaugment=','", "train.diffaugment: ',': give one or more"),
    ("preprocess.background=256", "preprocess.background: 256 is not a grey level"),
    ("preprocess.background=[0,0,-1]", "preprocess.background: [0, 0, -1] is not a grey level"),
    ("preprocess.background=[0,0,true]", "preprocess.background: [0, 0, True] is not a grey level"),
    ("ingest.label_names=[1,'1']", "ingest.label_names: '1' given more than once"),
    ("ingest.label_names=[a,'']", "ingest.label_names: '' means 'no label'"),
    ("pipeline.name=metadata.sqlite-wal", "pipeline.name: 'metadata.sqlite-wal' is a name the root holds"),
    ("pipeline.name=serving", "pipeline.name: 'serving' is a name the root holds for itself"),
])
def test_checks_on_parameter_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_checked_values_that_are_fine_pass_unchanged():
    config = load_config(None, ["export.model_name=digits.v2", "train.diffaugment=color, cutout",
                                "preprocess.background=[0, 128, 255]", "ingest.label_names=[1, b]",
                                "pipeline.name=metadata"])
    assert config.parameters["export"]["model_name"] == "digits.v2"
    assert config.parameters["train"]["diffaugment"] == "color, cutout"
    assert config.parameters["preprocess"]["background"] == [0, 128, 255]
    assert config.parameters["ingest"]["label_names"] == [1, "b"] and config.name == "metadata"


def test_diffaugment_policies_of_the_spec_are_the_models():
    from ganpipe.components import specs
    from ganpipe.ganmodels import diffaugment

    assert specs.DIFFAUGMENT_POLICIES == diffaugment.POLICIES
