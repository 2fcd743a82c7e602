"""Mutation testing of the GAN core: one-line mutants of gan.py and losses.py against the fast tests.

Not part of CI. mutmut/cosmic-ray run every mutant in a fresh process (TensorFlow's ~10 s import
each time); this script imports TensorFlow once, copies the package and the tests to a scratch
directory, and for each mutant rewrites one line there, drops the package's modules from
``sys.modules`` and runs pytest in-process (stopping at the first failure). A mutant is *killed*
when a test fails or errors, *survives* when all pass.

    python tools/mutate.py [--max 60] [--seed 0] [--tests "tests/test_losses.py tests/test_gan.py -k ..."]

Mutations per line (each applied to the first match only): arithmetic and comparison operators
swapped, boolean constants and 0/1 literals changed, ``minimum``/``maximum`` and ``mean``/``sum``
swapped, a unary minus dropped, and a statement that is a bare call replaced by ``pass``.
Lines in docstrings, comments, imports, signatures and error messages are skipped.
"""
from __future__ import annotations

import argparse
import io
import os
import random
import re
import shutil
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout

TARGETS = ("ganpipe/ganmodels/gan.py", "ganpipe/ganmodels/losses.py")
FAST_TESTS = ("tests/test_losses.py tests/test_gan.py -k "
              "'test_losses or analytic or own_slice or one_row or frozen or ignore or wasserstein_defaults or warms_up "
              "or beyond or moves_only'")
SWAPS = [
    (r" \+ ", " - "), (r" - ", " + "), (r" \* ", " / "), (r" / ", " * "), (r" // ", " * "),
    (r" >= ", " > "), (r" <= ", " < "), (r" > ", " >= "), (r" < ", " <= "), (r" == ", " != "), (r" != ", " == "),
    (r"\bTrue\b", "False"), (r"\bFalse\b", "True"), (r"\bnot ", ""), (r" and ", " or "), (r" or ", " and "),
    (r"\b0\.0\b", "1.0"), (r"\b1\.0\b", "0.0"), (r"\b0\.5\b", "1.0"), (r"ops\.minimum", "ops.maximum"),
    (r"ops\.maximum", "ops.minimum"), (r"ops\.mean\(", "ops.sum("), (r"\(-", "("), (r"\[:n\]", "[n:]"),
    (r"\[n:\]", "[:n]"), (r"\bk == ", "k != "), (r"\+= ", "-= "),
]
CALL_STATEMENT = re.compile(r"^(\s*)(self\.|_apply|ema\.|variable\.|tape\.|layer\.)[\w.]*\(.*\)\s*$")


def candidate_lines(source: str):
    """(line number, line) pairs worth mutating: code, outside docstrings, imports and messages."""
    in_docstring = False
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        quotes = stripped.count('"""')
        if in_docstring:
            in_docstring = quotes % 2 == 0
            continue
        if quotes:
            in_docstring = quotes % 2 == 1
            continue
        if (not stripped or stripped.startswith(("#", "import", "from", "def ", "class ", "@", "raise", "f\"", "\""))
                or "ValueError" in line):
            continue
        yield number, line


def mutants(source: str):
    """Every (line number, original line, mutated line, description) of one file."""
    for number, line in candidate_lines(source):
        code = line.split("  #")[0]
        for pattern, replacement in SWAPS:
            match = re.search(pattern, code)
            if match:
                mutated = code[:match.start()] + re.sub(pattern, replacement, code[match.start():], count=1)
                yield number, line, mutated, f"{pattern!r} -> {replacement!r}"
        call = CALL_STATEMENT.match(code)
        if call:
            yield number, line, f"{call.group(1)}pass", "call removed"


def run_tests(scratch: str, test_args: str) -> bool:
    """True if every selected test passes on the scratch copy (package modules re-imported)."""
    import keras
    import pytest

    for name in [name for name in sys.modules if name.startswith(("ganpipe", "test_", "conftest"))]:
        del sys.modules[name]
    custom = keras.saving.get_custom_objects()
    for key in [key for key in custom if key.startswith("ganpipe>")]:
        del custom[key]
    keras.backend.clear_session()
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--rootdir", scratch, *shlex_split(test_args)])
    return code == 0


def shlex_split(args: str):
    import shlex
    return shlex.split(args)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=60, help="mutants to run (an even sample over all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tests", default=FAST_TESTS)
    parser.add_argument("--skip-baseline", action="store_true", help="do not first check the tests pass unmutated")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scratch = tempfile.mkdtemp(prefix="ganpipe-mutants-")
    # no bytecode: a mutant of the same size written in the same second would otherwise load a
    # stale .pyc (Python checks source mtime in seconds and size) and survive for nothing
    sys.dont_write_bytecode = True
    for folder in ("ganpipe", "tests"):
        shutil.copytree(os.path.join(root, folder), os.path.join(scratch, folder),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(root, "pytest.ini"), scratch)
    os.chdir(scratch)
    sys.path.insert(0, scratch)
    import tensorflow  # noqa: F401  (imported once, here)

    everything = [(path, *m) for path in TARGETS for m in mutants(open(path).read())]
    chosen = random.Random(args.seed).sample(everything, min(args.max, len(everything)))
    if not args.skip_baseline and not run_tests(scratch, args.tests):
        sys.exit("the selected tests fail on the unmutated code")
    survivors, start = [], time.perf_counter()
    for i, (path, number, original, mutated, what) in enumerate(chosen, 1):
        text = open(path).read()
        lines = text.splitlines(keepends=True)
        lines[number - 1] = mutated + "\n"
        with open(path, "w") as handle:
            handle.writelines(lines)
        try:
            killed = not run_tests(scratch, args.tests)
        finally:
            with open(path, "w") as handle:
                handle.write(text)
        if not killed:
            survivors.append((path, number, original.strip(), mutated.strip(), what))
        print(f"[{i}/{len(chosen)}] {'killed ' if killed else 'SURVIVED'} {path}:{number} {what}", flush=True)
    killed = len(chosen) - len(survivors)
    print(f"\n{killed}/{len(chosen)} mutants killed ({killed / len(chosen):.0%}) of {len(everything)} possible, "
          f"{time.perf_counter() - start:.0f} s")
    for path, number, original, mutated, what in survivors:
        print(f"survived {path}:{number}: {original!r} -> {mutated!r}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
