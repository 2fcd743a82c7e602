"""``python -m ganpipe``: the ``ganpipe`` command (how the local runner starts a step's own process)."""
from ganpipe.pipeline.cli import main

main(prog_name="ganpipe")
