"""Mutation testing: one-line mutants of a suite of modules (the GAN core by default) against their fast tests.

Not part of CI. mutmut/cosmic-ray run every mutant in a fresh process (TensorFlow's ~10 s import
each time, more on a loaded machine); this script imports TensorFlow once (running no op), copies
the package and the tests to a scratch directory, and for each mutant rewrites one line there and
runs pytest with ``-x`` (stop at the first failure) in a forked child, which imports the package
afresh and takes nothing it traced into the next run. A mutant is *killed* when a test fails or
errors, *survives* when all pass, and *times out* after ``--timeout`` seconds (counted apart).

As mutmut does, each mutant runs only the tests that execute its line: the unmutated (baseline) run
records with coverage.py which test executes which line of the suite's files (one coverage context
per test, fixture setup and teardown included), cached with its durations in
``<results>.baseline.json``. A mutant whose statement no test executes *survives* without a run
("not covered"); a statement run outside any test (at import, in a class body, a module constant)
gets the whole selection. Coverage cannot see code that autograph converts (Python control flow in
a ``tf.function`` or a ``tf.data`` map: fast_loop's chunk loop and the train_step it calls there,
the reader's parser): the summary marks those survivors "not covered", and ``--all-tests`` re-runs
them against the whole selection, as for code a test runs in a subprocess (the CLI under
``unshare``), which coverage does not follow. A fixture built once for many tests counts for the
first test that built it.
Tests are ordered so that killers come first: by expected seconds per kill (a test's duration in
the unmutated run over the mutants it killed so far, plus one); tests sharing a module-scoped
fixture (the trained LAPGAN, SRGAN, cGAN) stay together at the end so it is built once per mutant.

Results go to a JSON-lines file, one record per mutant, so the run can be done in chunks:

    python tools/mutate.py --suite cache --list        # every mutant of a suite (SUITES) with its id
    nice -n 10 python tools/mutate.py --ids 1-40       # a chunk; re-running skips killed mutants
    python tools/mutate.py --summary                   # counts over the results file so far
    nice -n 10 python tools/mutate.py --ids 28-31 --all-tests --skip-baseline   # lines only autograph runs

Add tests, then run without ``--skip-baseline`` so that the map of lines to tests includes them.

Mutations per line (each applied to the first match only): arithmetic and comparison operators
swapped, boolean constants and 0/1 literals changed, ``minimum``/``maximum`` and ``mean``/``sum``
swapped, a unary minus dropped, and a statement that is a bare call replaced by ``pass``.
Lines in docstrings, comments, imports, signatures and error messages are skipped.
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One suite per module group: the files mutated and the fast tests that must kill their mutants.
# Each suite's results go to mutants-<suite>.jsonl. The core suite: every fast test file that builds
# or trains a GAN or calls the losses (test_train, test_evaluate and test_export use the GAN only
# through the pipeline components).
SUITES = {
    "core": (("ganpipe/ganmodels/gan.py", "ganpipe/ganmodels/losses.py", "ganpipe/ganmodels/simultaneous.py",
              "ganpipe/ganmodels/ema.py", "ganpipe/ganmodels/updates.py", "ganpipe/ganmodels/network_walk.py"),
             "tests/test_gan.py tests/test_losses.py tests/test_families.py tests/test_remedies.py "
             "tests/test_fast_loop.py -m 'not slow'"),
    "fast_loop": (("ganpipe/ganmodels/fast_loop.py",), "tests/test_fast_loop.py -m 'not slow'"),
    "reader": (("ganpipe/components/reader.py",), "tests/test_reader.py -m 'not slow'"),
    "quality": (("ganpipe/components/quality.py",), "tests/test_quality.py -m 'not slow'"),
    # Evaluate's decisions and estimators; measure/samples/report need the trained-model fixtures
    # (minutes per mutant), so their tests run in CI, not here.
    "evaluate": (("ganpipe/components/evaluate/blessing.py", "ganpipe/ganmodels/metrics/sampling_noise.py",
                  "ganpipe/ganmodels/metrics/kernel.py"),
                 "tests/test_evaluate.py tests/test_metrics.py -m 'not slow' "
                 "-k 'threshold or gate or fold or paired or half_sample or kernel'"),
    "cache": (("ganpipe/pipeline/cache.py",), "tests/test_cache_keys.py tests/test_state.py -m 'not slow'"),
    "fingerprints": (("ganpipe/infra/fingerprints.py", "ganpipe/infra/listing.py"),
                     "tests/test_cache_keys.py tests/test_state.py -k 'key or fingerprint or verify or ingest' "
                     "-m 'not slow'"),
    "storage": (("ganpipe/infra/storage.py",), "tests/test_storage.py -m 'not slow'"),
    "metadata": (("ganpipe/pipeline/metadata.py", "ganpipe/pipeline/records.py"),
                 "tests/test_store.py tests/test_runner.py "
                 "tests/test_state.py::test_read_only_commands_work_on_a_read_only_root "
                 "tests/test_state.py::test_a_store_from_before_schema_versions_is_migrated_and_verified_the_old_way "
                 "-m 'not slow'"),
}
SWAPS = [
    (r" \+ ", " - "), (r" - ", " + "), (r" \* ", " / "), (r" / ", " * "), (r" // ", " * "),
    (r" >= ", " > "), (r" <= ", " < "), (r" > ", " >= "), (r" < ", " <= "), (r" == ", " != "), (r" != ", " == "),
    (r"\bTrue\b", "False"), (r"\bFalse\b", "True"), (r"\bnot ", ""), (r" and ", " or "), (r" or ", " and "),
    (r"\b0\.0\b", "1.0"), (r"\b1\.0\b", "0.0"), (r"\b0\.5\b", "1.0"), (r"ops\.minimum", "ops.maximum"),
    (r"ops\.maximum", "ops.minimum"), (r"ops\.mean\(", "ops.sum("), (r"\(-", "("), (r"\[:n\]", "[n:]"),
    (r"\[n:\]", "[:n]"), (r"\bk == ", "k != "), (r"\+= ", "-= "),
]
# a statement that is only a call: the GAN core's state-changing calls; any call elsewhere
CORE_CALL = re.compile(r"^(\s*)(self\.|_apply|ema\.|variable\.|tape\.|layer\.)[\w.]*\(.*\)\s*$")
ANY_CALL = re.compile(r"^(\s*)([A-Za-z_][\w.]*)\(.*\)\s*$")

# Mutants no test can kill because the program behaves the same, keyed by (file, original line,
# mutated line), each with the reason. A mutant listed here that gets killed is reported as such.
EQUIVALENT = {
    ("gan.py", "if isinstance(rows, int) and rows >= self.d_steps:  # static shapes: plain slices",
     "if isinstance(rows, int) and rows > self.d_steps:"):
        "rows == d_steps: the gather path then picks row k for slice k, the same one-row slices",
    ("gan.py", "if self.label_flip > 0.0:", "if self.label_flip >= 0.0:"):
        "label_flip = 0: every uniform draw in [0, 1) is >= 0, so the targets are multiplied by 1",
    ("gan.py", "targets = targets * ops.cast(draws >= self.label_flip, \"float32\")",
     "targets = targets * ops.cast(draws > self.label_flip, \"float32\")"):
        "differs only when a float32 uniform draw equals label_flip exactly (probability <= 2^-23 a draw)",
    ("network_walk.py", "return list(model._flatten_layers(include_self=False, recursive=True))",
     "return list(model._flatten_layers(include_self=True, recursive=True))"):
        "the network itself is a Model: not BatchNorm, not SpectralNormalization, no couples_samples",
    ("updates.py", "return ops.sum(ops.stack([ops.cast(loss, \"float32\") for loss in network.losses])) "
     "if network.losses else 0.0",
     "return ops.sum(ops.stack([ops.cast(loss, \"float32\") for loss in network.losses])) "
     "if network.losses else 1.0"):
        "a constant added to an objective that is only differentiated (the logged losses exclude it)",
    ("fast_loop.py", "if getattr(self, \"auto_steps_per_execution\", False):",
     "if getattr(self, \"auto_steps_per_execution\", True):"):
        "compile() always sets the attribute and Keras' fit needs a compiled model, so the default is never read",
    ("fast_loop.py", "run_chunk = tf.function(self._train_on_chunk, jit_compile=bool(self.jit_compile), reduce_retracing=True)",
     "run_chunk = tf.function(self._train_on_chunk, jit_compile=bool(self.jit_compile), reduce_retracing=False)"):
        "reduce_retracing only decides how many traces new chunk lengths cost, not what a step computes",
    ("fast_loop.py", "fetch = tf.function(lambda iterator: _fetch_batches(iterator, steps), reduce_retracing=True)",
     "fetch = tf.function(lambda iterator: _fetch_batches(iterator, steps), reduce_retracing=False)"):
        "reduce_retracing only decides how many traces new iterator specs cost, not which batches come",
    ("simultaneous.py", "return ops.all(ops.abs(a) > 1e-25 * ops.abs(b))", "return ops.all(ops.abs(a) > 1e-25 / ops.abs(b))"):
        "either threshold keeps a_i J in float32's normal range for |b_i| < 1e13, where both branches are exact",
    ("storage.py", "for directory, _, files in os.walk(path, topdown=False):",
     "for directory, _, files in os.walk(path, topdown=True):"):
        "every file and directory is fsynced before sync_tree returns and the commit comes after: order is moot",
    ("metadata.py", "self._db.execute(f\"PRAGMA busy_timeout = {int(timeout * 1000)}\")", "pass"):
        "sqlite3.connect(timeout=...) already sets the same busy timeout; the pragma restates it",
    ("metadata.py", "return json.dumps(value, sort_keys=True)", "return json.dumps(value, sort_keys=False)"):
        "stored JSON is only read back with json.loads: key order never reaches a comparison",
    ("metadata.py", "if migrate and version < SCHEMA_VERSION:", "if migrate and version <= SCHEMA_VERSION:"):
        "at the current version _migrate re-reads it and returns: one empty write transaction more",
    ("metadata.py", "if version >= SCHEMA_VERSION:  # another process got here first",
     "if version > SCHEMA_VERSION:"):
        "equal only when another process migrated meanwhile; re-running the migration is idempotent",
    ("quality.py", "super().__init__()", "pass"):
        "keras' Callback.__init__ only presets params and model, which fit sets before any hook runs",
    ("quality.py", "seed=args.game.seed, drop_remainder=False, cache=False)))",
     "seed=args.game.seed, drop_remainder=True, cache=False)))"):
        "the one batch taken has count <= the train split's size examples, so it is full either way",
    ("quality.py", "self.writer.flush()", "pass"):
        "leaving writer.as_default() just before flushes the writer (eager mode, where callbacks run)",
    ("metadata.py", "db.close()", "pass"):
        "the connection that failed its probe is rebound next iteration and closed when CPython frees it",
}


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


def mutants(path: str, source: str, call_statement=ANY_CALL):
    """Every mutant of one file as a dict: line number, original and mutated line, operator, and a
    key that survives edits elsewhere in the file (the line's text and its occurrence)."""
    seen = {}
    for number, line in candidate_lines(source):
        code = line.split("  #")[0]
        changes = []
        for pattern, replacement in SWAPS:
            match = re.search(pattern, code)
            if match:
                mutated = code[:match.start()] + re.sub(pattern, replacement, code[match.start():], count=1)
                changes.append((mutated, f"{pattern!r} -> {replacement!r}"))
        call = call_statement.match(code)
        if call:
            changes.append((f"{call.group(1)}pass", "call removed"))
        for mutated, what in changes:
            text = (os.path.basename(path), line.strip(), mutated.strip())
            seen[text] = seen.get(text, 0) + 1
            yield {"path": path, "line": number, "original": line, "mutated": mutated, "what": what,
                   "key": "|".join(text) + f"|{seen[text]}", "text": text}


def all_mutants(suite: str):
    call_statement = CORE_CALL if suite == "core" else ANY_CALL
    found = [m for path in SUITES[suite][0]
             for m in mutants(path, open(os.path.join(ROOT, path)).read(), call_statement)]
    for number, mutant in enumerate(found, 1):
        mutant["id"] = number
    return found


def parse_ids(spec: str, count: int):
    if not spec:
        return set(range(1, count + 1))
    ids = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ids.update(range(int(low), int(high or low) + 1))
    return ids


class TestOrder:
    """pytest plugin: killers first, then quick tests; records durations and the first failure."""

    def __init__(self, durations, kills):
        self.durations, self.kills = durations, kills
        self.failed, self.why, self.recording = None, None, False
        self.wanted = None  # the node ids to run (None: every collected test)
        self.coverage = None  # in the baseline run: a coverage.Coverage with one context per test

    def pytest_runtest_logstart(self, nodeid, location):
        if self.coverage:
            self.coverage.switch_context(nodeid)

    def pytest_collection_modifyitems(self, config, items):
        if self.wanted is not None:
            config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in self.wanted])
            items[:] = [item for item in items if item.nodeid in self.wanted]
        def shares_a_fixture(item):
            defs = getattr(item, "_fixtureinfo", None)
            return any(d[-1].scope != "function" for d in (defs.name2fixturedefs.values() if defs else ()))

        alone = [item for item in items if not shares_a_fixture(item)]
        shared = [item for item in items if shares_a_fixture(item)]
        # expected seconds per kill: a test's duration over the mutants it killed so far (+1)
        alone.sort(key=lambda item: (self.durations.get(item.nodeid, 60.0) + 0.05) / (self.kills.get(item.nodeid, 0) + 1))
        items[:] = alone + shared

    def pytest_runtest_logreport(self, report):
        if self.recording and report.when in ("setup", "call"):
            self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        if report.failed and self.failed is None:
            self.failed, self.why = report.nodeid, str(report.longrepr).strip().splitlines()[-1][:300]

    def pytest_collectreport(self, report):
        if report.failed and self.failed is None:
            self.failed = f"collecting {report.nodeid}"


def run_tests(test_args: str, order: TestOrder, timeout: float, covered_files=()):
    """'passed', 'failed' (with ``order.failed`` set) or 'timeout', on the scratch copy; with
    ``covered_files``, ``order.contexts`` gets {file: {line: [node ids that executed it]}}.

    pytest runs in a forked child: the parent has imported TensorFlow but run no op (TensorFlow's
    thread pools do not survive a fork once started), so each mutant gets a fresh package import
    without paying for TensorFlow's, and nothing one run traces stays in memory for the next."""
    result_path = os.path.join(tempfile.gettempdir(), f"ganpipe-mutant-{os.getpid()}.json")
    order.failed = order.why = None
    pid = os.fork()
    if pid == 0:  # the child: run the tests, write what happened, never return into the parent's code
        code, outcome = 1, {"outcome": "failed", "failed": None, "durations": {}}
        try:
            import pytest

            if covered_files:
                import coverage

                order.coverage = coverage.Coverage(data_file=None, include=[os.path.abspath(f) for f in covered_files])
                order.coverage.start()
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                exit_code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *shlex.split(test_args)],
                                        plugins=[order])
            outcome = {"outcome": "passed" if exit_code == 0 else "failed", "failed": order.failed,
                       "why": order.why, "durations": order.durations}
            if covered_files:
                order.coverage.stop()
                data = order.coverage.get_data()
                outcome["contexts"] = {path: data.contexts_by_lineno(os.path.abspath(path)) for path in covered_files}
            code = 0
        finally:
            with open(result_path, "w") as handle:
                json.dump(outcome, handle)
            os._exit(code)
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            order.failed = None
            return "timeout"
        time.sleep(0.2)
    if not os.path.exists(result_path):  # the child died (e.g. a crash inside TensorFlow)
        order.failed = "the test process crashed"
        return "failed"
    with open(result_path) as handle:
        outcome = json.load(handle)
    os.remove(result_path)
    order.failed, order.why = outcome["failed"], outcome.get("why")
    if order.recording:
        order.durations.update(outcome["durations"])
    order.contexts = outcome.get("contexts")
    return outcome["outcome"]


def tests_of_line(tree: ast.Module, contexts: dict, line: int):
    """The node ids of the tests that execute the statement holding ``line`` (all of a multi-line
    statement's lines, a compound statement's header), or None when its effect outlives the test
    that ran it (run at import or outside any test): then every test of the selection."""
    innermost, in_function = None, False
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) is None or not node.lineno <= line <= node.end_lineno:
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and node.lineno < line:
            in_function = True
        if isinstance(node, ast.stmt) and (innermost is None or node.lineno >= innermost.lineno):
            innermost = node
    if innermost is None or not in_function:
        return None
    body = getattr(innermost, "body", None)
    last = body[0].lineno - 1 if isinstance(body, list) and body and body[0].lineno > innermost.lineno else innermost.end_lineno
    tests = set()
    for number in range(innermost.lineno, max(last, innermost.lineno) + 1):
        tests.update(contexts.get(str(number), ()))
    return None if "" in tests else tests


def load_results(path):
    results = {}
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                record = json.loads(line)
                results[record["key"]] = record
    return results


def summary(mutants_now, results):
    """Counts over the mutants of the current code that have a result."""
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "timeout": 0, "not run": 0}
    survivors, wrong_claims = [], []
    for mutant in mutants_now:
        record = results.get(mutant["key"])
        outcome = record["outcome"] if record else "not run"
        if mutant["text"] in EQUIVALENT:
            if outcome == "killed":
                wrong_claims.append(mutant)
            else:
                outcome = "equivalent"
        counts[outcome] += 1
        if outcome == "survived":
            survivors.append((mutant, " (not covered)" if record.get("why") else ""))
    scored = counts["killed"] + counts["survived"] + counts["timeout"]
    rate = (counts["killed"] + counts["timeout"]) / scored if scored else 0.0
    print(f"\n{len(mutants_now)} mutants: " + ", ".join(f"{n} {k}" for k, n in counts.items())
          + f"; killed (timeouts included) {rate:.1%} of the non-equivalent ones run")
    for mutant, uncovered in survivors:
        print(f"survived{uncovered} #{mutant['id']} {mutant['path']}:{mutant['line']}: {mutant['original'].strip()!r} -> "
              f"{mutant['mutated'].strip()!r}")
    for mutant in wrong_claims:
        print(f"listed as equivalent but killed: #{mutant['id']} {mutant['text']}")
    for mutant in mutants_now:
        if mutant["text"] in EQUIVALENT:
            print(f"equivalent #{mutant['id']} {mutant['path']}:{mutant['line']}: {EQUIVALENT[mutant['text']]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="core", choices=sorted(SUITES), help="which files to mutate (SUITES)")
    parser.add_argument("--ids", default="", help="mutants to run, e.g. 1-40,55 (default: all; see --list)")
    parser.add_argument("--tests", default="", help="pytest arguments, relative to the repository (default: the suite's)")
    parser.add_argument("--results", default="", help="JSON-lines results file (default: mutants-<suite>.jsonl)")
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="seconds per mutant (default: 3x the unmutated run + 60)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="take the unmutated run's durations from the last run instead of running it first")
    parser.add_argument("--again", action="store_true", help="re-run killed mutants too")
    parser.add_argument("--all-tests", action="store_true",
                        help="run each mutant against the whole selection, not only the tests that execute its line")
    parser.add_argument("--list", action="store_true", help="print every mutant with its id and stop")
    parser.add_argument("--summary", action="store_true", help="print the counts of the results file and stop")
    args = parser.parse_args()
    args.tests = args.tests or SUITES[args.suite][1]
    args.results = args.results or os.path.join(ROOT, f"mutants-{args.suite}.jsonl")
    found = all_mutants(args.suite)
    results = load_results(args.results)
    if args.list:
        for m in found:
            print(f"#{m['id']} {m['path']}:{m['line']} {m['what']}: {m['mutated'].strip()}")
        return
    if args.summary:
        return summary(found, results)
    wanted = parse_ids(args.ids, len(found))
    chosen = [m for m in found if m["id"] in wanted and m["text"] not in EQUIVALENT
              and (args.again or results.get(m["key"], {}).get("outcome") not in ("killed",))]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    scratch = tempfile.mkdtemp(prefix="ganpipe-mutants-")
    # no bytecode: a mutant of the same size written in the same second would otherwise load a
    # stale .pyc (Python checks source mtime in seconds and size) and survive for nothing
    sys.dont_write_bytecode = True
    for folder in ("ganpipe", "tests"):
        shutil.copytree(os.path.join(ROOT, folder), os.path.join(scratch, folder),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pytest.ini"), scratch)
    os.chdir(scratch)
    sys.path.insert(0, scratch)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit("terminated"))  # so the finally below runs
    # imported once, here (no op run: see run_tests); the tests' other heavy imports too
    import keras  # noqa: F401
    import pytest  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import tensorflow  # noqa: F401

    kills = {}
    for record in results.values():
        if record.get("killer"):
            kills[record["killer"]] = kills.get(record["killer"], 0) + 1
    order = TestOrder({}, kills)
    saved = args.results + ".baseline.json"
    if args.skip_baseline and os.path.exists(saved):
        baseline, order.durations, contexts = json.load(open(saved))
    else:
        start, order.recording = time.perf_counter(), True
        if run_tests(args.tests, order, 3600.0, covered_files=SUITES[args.suite][0]) != "passed":
            sys.exit(f"the selected tests fail on the unmutated code ({order.failed})")
        baseline, order.recording, contexts = time.perf_counter() - start, False, order.contexts
        json.dump([baseline, order.durations, contexts], open(saved, "w"))
    for mutant in chosen:
        tree = ast.parse(open(mutant["path"]).read())
        mutant["tests"] = None if args.all_tests else tests_of_line(tree, contexts[mutant["path"]], mutant["line"])
    timeout = args.timeout or 3 * baseline + 60
    print(f"unmutated run (traced): {baseline:.0f} s; {len(chosen)} mutants to run, {timeout:.0f} s limit each",
          flush=True)
    try:
        run_mutants(chosen, args.tests, order, timeout, results, kills, args.results)
    finally:
        os.chdir(ROOT)
        shutil.rmtree(scratch, ignore_errors=True)
    summary(found, results)


def run_mutants(chosen, tests, order, timeout, results, kills, results_path):
    for i, mutant in enumerate(chosen, 1):
        path = mutant["path"]
        text = open(path).read()
        lines = text.splitlines(keepends=True)
        lines[mutant["line"] - 1] = mutant["mutated"] + "\n"
        with open(path, "w") as handle:
            handle.writelines(lines)
        began, order.wanted, order.failed, order.why = time.perf_counter(), mutant["tests"], None, None
        try:
            outcome = run_tests(tests, order, timeout) if order.wanted != set() else "not covered"
        finally:
            with open(path, "w") as handle:
                handle.write(text)
        outcome = {"failed": "killed", "passed": "survived"}.get(outcome, outcome)
        record = {"key": mutant["key"], "id": mutant["id"], "where": f"{path}:{mutant['line']}",
                  "mutated": mutant["mutated"].strip(), "outcome": outcome, "killer": order.failed, "why": order.why,
                  "tests": "all" if order.wanted is None else len(order.wanted),
                  "seconds": round(time.perf_counter() - began, 1)}
        if outcome == "not covered":
            record["outcome"], record["why"] = "survived", "not covered: no test executes this line"
        if order.failed:
            kills[order.failed] = kills.get(order.failed, 0) + 1
        results[mutant["key"]] = record
        with open(results_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"[{i}/{len(chosen)}] #{mutant['id']} {outcome:8s} {record['seconds']:6.1f} s {record['tests']} tests "
              f"{record['where']} {mutant['what']}  {order.failed or ''}", flush=True)


if __name__ == "__main__":
    main()
