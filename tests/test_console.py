"""What the console shows: plain progress lines (rate, ETA, every tenth), the live rich display on
a terminal, component messages through logging into the execution's log file."""
import io
import re

from ganpipe.components.base import Progress
from ganpipe.pipeline import console


def test_plain_progress_every_tenth_with_rate_and_eta(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("ganpipe.components.base.time.monotonic", lambda: now[0])
    lines = []
    with Progress(lines.append, "step", 200, "steps") as bar:
        for step in range(101, 201):  # a resumed run: steps 101..200, one second each
            now[0] = 1000.0 + step
            bar.update(step, d_loss=0.5)
    assert [line.split(" (")[0] for line in lines] == ["step 101/200"] + [f"step {n}/200" for n in range(120, 201, 20)]
    assert lines[0].endswith("- steps/s, ETA -")  # no rate before the second point
    # 20 steps in 20 s since the resume's first point: 1 step/s, 80 steps to go.
    assert lines[1] == "step 120/200 (60%), d_loss 0.5, 1 steps/s, ETA 1:20"
    assert lines[2] == "step 140/200 (70%), d_loss 0.5, 1 steps/s, ETA 1:00"
    assert lines[-1].endswith("(100%), d_loss 0.5, 1 steps/s, ETA 0:00")


def test_live_display_draws_bars_and_logs_the_final_line(monkeypatch):
    display = console.LiveDisplay()
    terminal = io.StringIO()
    from rich.console import Console

    display.console = Console(file=terminal, force_terminal=True, width=120)
    display.bars.live.console = display.console
    lines = []
    with display.step("Train"):
        assert display.active
        with display.progress("step", 50, "steps", lines.append) as bar:
            for step in range(1, 51):
                bar.update(step, d_loss=0.25)
        display.print("a message above the bars")
    assert not display.active and not display.bars.tasks
    assert len(lines) == 1 and lines[0].startswith("step 50/50 (100%), d_loss 0.25")
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.getvalue())
    assert "a message above the bars" in drawn and "Train" in drawn


def test_messages_go_to_the_console_and_the_execution_log(tmp_path, capsys):
    console.configure_logging(verbose=False)
    log_file = str(tmp_path / "Train" / "logs" / "7.log")
    with console.execution_log(log_file):
        console.component_logger("Train").info("training dcgan")
        console.component_logger("Train").debug("not shown without --verbose")
    console.component_logger("Train").info("after the step")
    assert capsys.readouterr().out.splitlines() == ["      Train | training dcgan", "      Train | after the step"]
    text = open(log_file).read()
    assert "INFO ganpipe.Train: training dcgan" in text and "after the step" not in text and "verbose" not in text
