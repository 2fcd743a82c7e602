"""Named crash points for fault-injection tests: ``GANPIPE_KILL_AT=<name>`` makes the process
SIGKILL itself the first time it reaches ``point(name)``, exactly as a power cut or the OOM killer
would stop it there (no cleanup, no exception handlers). Unset, a point costs one dict lookup.

Points: ``<Component>:before-publish`` (executor done), ``<Component>:mid-publish`` (first output
moved into place), ``<Component>:before-commit`` (outputs fsynced, not yet recorded),
``<Component>:after-commit``; ``Train:after-checkpoint`` (mid-training); ``Export:before-version`` (SavedModel and card complete in
``.incoming-*``), ``Export:after-version`` (version visible, execution not yet recorded);
``gc:after-mark``, ``gc:mid-trash``, ``gc:mid-delete``.
"""
from __future__ import annotations

import os
import signal

KILL_AT = "GANPIPE_KILL_AT"


def point(name: str) -> None:
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
