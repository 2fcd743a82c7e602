"""The model card's serving instructions work: its TF Serving REST bodies (the row form for
serving_default, the columnar form for generate) name the signatures' real inputs, and fed to the
exported SavedModel the way TF Serving feeds them, they run."""
import json
import os
import re

import numpy as np
import tensorflow as tf

from test_export import exported, models, serving  # noqa: F401  (module fixtures)


def rest_bodies(card):
    """The JSON request bodies of the card, placeholders filled: <N floats> -> N zeros,
    <uint8 [h, w, c] nested lists> -> a zero image."""
    block = card[card.index("```json\n") + 8:]
    block = block[:block.index("```")]
    block = re.sub(r"<(\d+) floats>", lambda m: json.dumps([0.0] * int(m.group(1))), block)
    block = re.sub(r"<uint8 \[([\d, ]+)\] nested lists>",
                   lambda m: json.dumps(np.zeros([int(d) for d in m.group(1).split(",")], int).tolist()), block)
    return [json.loads(body) for body in re.split(r"\n(?=\{\"signature_name\")", block.strip())]


def call_like_tf_serving(model, body):
    """Row form: one object per instance, stacked per input; columnar form: inputs as given."""
    signature = model.signatures[body["signature_name"]]
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        inputs = {name: np.stack([instance[name] for instance in body["instances"]]) for name in body["instances"][0]}
    else:
        inputs = body["inputs"]
    assert set(inputs) == set(specs), (body["signature_name"], sorted(specs))
    return signature(**{name: tf.constant(value, specs[name].dtype) for name, value in inputs.items()})


def test_card_rest_bodies_and_python_run_against_the_saved_model(exported, serving):  # noqa: F811
    for name in ("dcgan", "cgan"):
        version_dir = os.path.join(serving, name, "1")
        card = open(os.path.join(version_dir, "assets.extra", "README.md")).read()
        assert f"POST http://localhost:8501/v1/models/{name}/versions/1:predict" in card
        model = tf.saved_model.load(version_dir)
        served, generated = rest_bodies(card)
        assert served["signature_name"] == "serving_default" and generated["signature_name"] == "generate"
        assert call_like_tf_serving(model, served)["images"].shape[0] == len(served["instances"])
        assert call_like_tf_serving(model, generated)["images"].shape[0] == generated["inputs"]["num_samples"]
        python = card[card.index("```python\n") + 10:]
        python = python[:python.index("```")]
        cwd = os.getcwd()
        os.chdir(version_dir)  # the card's paths are relative to the version directory
        try:
            scope = {}
            exec(python, scope)
        finally:
            os.chdir(cwd)
        assert scope["same"]["images"].shape[0] == generated["inputs"]["num_samples"] == 5  # the export's bound
