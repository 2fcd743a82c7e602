"""The model card: README.md in a version's assets.extra/ (serving, data, training, evaluation, lineage)."""
from __future__ import annotations

import re

import ganpipe
from ganpipe.components.evaluate.report import metrics_table, served_sentence
from ganpipe.components.export.signatures import lowres_shape
from ganpipe.components.privacy import privacy_statement

MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def model_card(model_name, version, info, schema, blessing, result, generator_file, lineage,
               max_generate_samples) -> str:
    limit = ("" if info.get("family") == "srgan" else
             f"\n\n`generate` accepts `num_samples` from 0 to {max_generate_samples} (`export.max_generate_samples`); "
             "a larger request fails with InvalidArgument.")
    sections = [
        f"# {markdown_text(model_name)}, version {version}",
        f"A {info.get('family', '?')} GAN generator ({generator_file}) exported by ganpipe {ganpipe.__version__}; "
        f"{result['reason']}.",
        "## Serving\n\n" + _signature_table(info) + limit + "\n\n" + _serving_howto(info, model_name, version, min(16, max_generate_samples)),
        "## Data\n\n" + _bullets(_data_facts(schema)),
        "## Training\n\n" + _bullets({key: info[key] for key in ("family", "latent_dim", "num_classes", "steps",
                                                                   "precision", "seed", "ema", "final_metrics")
                                 if key in info}),
        "## Privacy\n\n" + privacy_statement(info.get("privacy")),
        "## Evaluation\n\n" + _metrics_section(blessing),
        "## Lineage\n\n" + _bullets(_lineage_facts(lineage, model_name)),
    ]
    return "\n\n".join(sections) + "\n"


def _signature_table(info: dict) -> str:
    rows = ["| signature | inputs | outputs |", "|---|---|---|"]
    if info.get("family") == "srgan":
        for name in ("serving_default", "upscale"):
            rows.append(f"| `{name}` | `lowres` uint8 [N, {', '.join(map(str, lowres_shape(info)))}] | "
                        f"`images` uint8 [N, {', '.join(map(str, info.get('data_shape', [])))}], "
                        "`images_float` float32 in [0, 1] |")
        return "\n".join(rows)
    image = info.get("data_kind", "image") == "image"
    shape = ", ".join(map(str, info.get("data_shape") or []))
    produced = (f"`images` uint8 [N, {shape}], `images_float` float32 in [0, 1]" if image
                else f"`samples` float32 [N, {shape}] in the data's units")
    label_in = ", `label` int64 [N]" if info.get("num_classes") else ""
    label_out = ", `labels` int64 [N]" if info.get("num_classes") else ""
    rows.append(f"| `serving_default` | `latent` float32 [N, {info.get('latent_dim')}]{label_in} | {produced} |")
    rows.append(f"| `generate` | `num_samples` int32, `seed` int64 (scalars) | "
                f"{'`images` uint8' if image else '`samples` float32'}{label_out}; the same seed gives the same "
                "samples |")
    return "\n".join(rows)


def _serving_howto(info: dict, model_name: str, version: int, count: int) -> str:
    """How to call the signatures in Python and over TF Serving's REST API; paths are relative to
    the version directory (the one holding saved_model.pb; this card is in its assets.extra/)."""
    python = ["import tensorflow as tf", "", 'model = tf.saved_model.load(".")  # run in the version directory']
    if info.get("family") == "srgan":
        rest = [f'{{"signature_name": "upscale", "instances": [{{"lowres": <uint8 [{", ".join(map(str, lowres_shape(info)))}] '
                'nested lists>}]}']
        python.append('highres = model.signatures["upscale"](lowres=lowres_uint8_batch)["images"]')
    else:
        latent = f"<{info.get('latent_dim')} floats>"
        last_class = int(info.get("num_classes") or 0) - 1
        label = f', "label": {last_class}' if last_class >= 0 else ""
        rest = ['{"signature_name": "serving_default",',
                f' "instances": [{{"latent": {latent}{label}}}, {{"latent": {latent}{label}}}]}}',
                f'{{"signature_name": "generate", "inputs": {{"num_samples": {count}, "seed": 7}}}}']
        label_arg = f", label=tf.constant([0, {last_class}], tf.int64)" if last_class >= 0 else ""
        python += [f'out = model.signatures["serving_default"](latent=tf.random.normal([2, {info.get("latent_dim")}])'
                   f'{label_arg})',
                   f'same = model.signatures["generate"](num_samples=tf.constant({count}), seed=tf.constant(7, tf.int64))']
    serve = (f"docker run -p 8501:8501 -v \"$(cd .. && pwd)\":/models/{model_name} -e MODEL_NAME={model_name} "
             "tensorflow/serving   # from this version directory; serves every version beside it")
    return ("Python (no ganpipe needed):\n\n```python\n" + "\n".join(python) + "\n```\n\n"
            "TF Serving REST (`POST http://localhost:8501/v1/models/" + model_name + f"/versions/{version}:predict`): "
            "the row form (`instances`, one object per sample, answered as `predictions`) for batched "
            "signatures, the columnar form (`inputs`, answered as `outputs`) for `generate`, whose inputs are "
            "scalars:\n\n```json\n" + "\n".join(rest) + "\n```\n\n```bash\n" + serve + "\n```")


def _data_facts(schema: dict) -> dict:
    facts = {"kind": schema.get("kind"), "shape": schema.get("shape"), "classes": schema.get("num_classes"),
             "counts": schema.get("counts")}
    if schema.get("label_names"):
        facts["label names"] = ", ".join(map(markdown_text, schema["label_names"]))
    if schema.get("lowres_shape"):
        facts["low-resolution shape"] = schema["lowres_shape"]
    if schema.get("feature_names"):
        facts["features"] = ", ".join(map(markdown_text, schema["feature_names"]))
    return facts


def _metrics_section(blessing: dict | None) -> str:
    if not blessing:
        return "No evaluation."
    sizes = blessing.get("samples") or {}
    return "\n".join([
        f"Blessed: **{'yes' if blessing.get('blessed') else 'no'}** — " + "; ".join(blessing.get("reasons", [])), "",
        f"Feature space: {blessing.get('feature_space')}; {sizes.get('folds')} folds of {sizes.get('fold')} fakes "
        f"against {sizes.get('reference')} train examples; main metric: {blessing.get('main_metric')}. ± is the "
        "standard error over the folds (the baseline's: over halves of the eval split). "
        + served_sentence(blessing.get("served")), "",
        metrics_table(blessing.get("metrics") or {}, blessing.get("main_metric"))])


def _lineage_facts(lineage: dict, model_name: str) -> dict:
    """By content fingerprint (``ganpipe lineage <this directory>`` walks the store)."""
    facts = {"pipeline": lineage.get("pipeline", model_name)}
    for name, fingerprint in (lineage.get("fingerprints") or {}).items():
        facts[f"{name} artifact fingerprint"] = fingerprint or "-"
    return facts


def _bullets(facts: dict) -> str:
    return "\n".join(f"- {key}: {value}" for key, value in facts.items() if value is not None) or "-"


def markdown_text(value) -> str:
    """``value`` as literal Markdown text on one line: user-supplied names (labels, features)
    must not turn into links, emphasis, table cells, headings or HTML in the card."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)

