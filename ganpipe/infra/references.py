"""``"package.module:attribute"`` references: how ganpipe names code it loads only when needed
(component executors, DAG modules, resolvers), so specs and configs stay free of heavy imports."""
from __future__ import annotations

import importlib


def split_reference(reference: str) -> tuple[str, str]:
    """``"a.b:c"`` -> ``("a.b", "c")``; the attribute is ``""`` when there is no ``:``."""
    module, _, attribute = reference.partition(":")
    return module, attribute


def load_reference(reference: str, default_attribute: str = ""):
    """Imports the module and returns its attribute (``default_attribute`` when none is named);
    ImportError or AttributeError name what is missing."""
    module, attribute = split_reference(reference)
    return getattr(importlib.import_module(module), attribute or default_attribute)
