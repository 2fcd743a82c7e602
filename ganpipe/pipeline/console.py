"""What a user sees while a pipeline runs: quiet third-party output, component logs through Python
``logging`` (console + a per-execution log file), live progress bars on a terminal, and a stdout
whose reader went away (``ganpipe run | head``) that never fails a step.

Component messages go to the ``ganpipe`` logger (``ganpipe.<Component>``). The console handler
writes to stdout: through a ``rich`` live display when stdout is a terminal (bars with rate and
ETA, a spinner with the elapsed time while a step has no bar), else as plain lines.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from ganpipe.components.base import Progress

LOGGER = "ganpipe"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ----------------------------------------------------------------------------- a closed stdout


def stdout_gone() -> None:
    """The reader of stdout went away: send the rest of our output to /dev/null, so later writes
    (and the interpreter's final flush) succeed, and the run goes on writing its log files."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def echo(message: str = "", err: bool = False) -> None:
    """``print`` that survives a closed pipe."""
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(message + "\n")
        stream.flush()
    except BrokenPipeError:
        if not err:
            stdout_gone()


def component_logger(component: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{component}")


class ConsoleFormatter(logging.Formatter):
    """Component messages indented under the runner's step lines: ``      Train | step 50/3000 ...``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        component = record.name.partition(".")[2]
        return f"      {component} | {message}" if component else message


class ConsoleHandler(logging.Handler):
    """Messages to stdout, one line each (through the live display when there is one)."""

    def __init__(self, display: "LiveDisplay | None" = None):
        super().__init__(logging.DEBUG)
        self.display = display
        self.setFormatter(ConsoleFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if self.display is not None and self.display.active:
            self.display.print(message)
        else:
            echo(message)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            stdout_gone()
        else:
            super().handleError(record)


# ----------------------------------------------------------------------------- quiet libraries


def quiet_libraries(verbose: bool) -> None:
    """Silences TensorFlow's C++ and absl logging, Beam's optional-dependency warnings and Keras'
    noise on the console unless ``verbose``; must run before TensorFlow is imported to reach its C++
    logging. What still reaches stderr while a step runs lands in its log file (``native_stderr_to``)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl", "apache_beam", "keras", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def native_stderr_to(path: str) -> Iterator[None]:
    """Appends file descriptor 2 to ``path`` while the block runs: TensorFlow's C++ code prints
    'before absl::InitializeLog' lines and CUDA probe errors there whatever the log level, and
    ``warnings`` print there too; they belong in the execution's log file, not on the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(target, 2)
    os.close(target)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


# ----------------------------------------------------------------------------- logging set-up


def configure_logging(verbose: bool, display: "LiveDisplay | None" = None) -> logging.Logger:
    """The ``ganpipe`` logger: INFO (DEBUG with ``verbose``) to the console, not to the root logger."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    logger.addHandler(ConsoleHandler(display))
    return logger


@contextlib.contextmanager
def execution_log(path: str) -> Iterator[str]:
    """Copies every ``ganpipe`` message (and warnings) into ``path`` while the block runs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()


# ----------------------------------------------------------------------------- live progress


class PlainDisplay:
    """Without a terminal: no spinner, progress as plain log lines every tenth of the way.
    Unless ``verbose``, native stderr of a running step goes to its log file."""

    active = False

    def __init__(self, verbose: bool = False):
        self.verbose = verbose

    def native_stderr(self, log_file: str):
        return contextlib.nullcontext() if self.verbose else native_stderr_to(log_file)

    def step(self, name: str):
        return contextlib.nullcontext()

    def progress(self, description: str, total: int, unit: str, log=logging.getLogger(LOGGER).info) -> Progress:
        return Progress(log, description, total, unit)


class LiveDisplay(PlainDisplay):
    """One ``rich`` live display for the run (terminal only): a spinner with the elapsed time per
    running step, and the bars its component opens."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self.console = Console(file=sys.stdout)
        self.bars = RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[shown]}"),
                                 console=self.console, transient=True)
        self.active = False

    def print(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A spinner with the elapsed time while ``name`` runs."""
        self.bars.start()
        self.active = True
        task = self.bars.add_task(name, total=None, rate="", shown="")
        try:
            yield
        finally:
            self.bars.remove_task(task)
            self.bars.stop()
            self.active = False

    def progress(self, description: str, total: int, unit: str, log=logging.getLogger(LOGGER).info) -> Progress:
        return BarProgress(self, description, total, unit, log)


class BarProgress(Progress):
    """A ``Progress`` drawn as a live bar; the final line still goes to the log (and log file)."""

    def __init__(self, display: LiveDisplay, description: str, total: int, unit: str, log):
        super().__init__(log, description, total, unit)
        self.display = display
        self.task = display.bars.add_task(description, total=self.total, rate="", shown="")

    def update(self, done: int, **fields) -> None:
        if self.first is None:
            self.first = done
        self.done = done
        self.fields.update(fields)
        rate = self.rate()
        shown = " ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                         for name, value in self.fields.items())
        self.display.bars.update(self.task, completed=done, shown=shown,
                                 rate=f"{rate:.3g} {self.unit}/s" if rate else "")

    def close(self) -> None:
        self.display.bars.remove_task(self.task)
        self.log(self.line())
