"""Run mutmut's own mutants against a chosen, fast test selection, in one process.

Two uses (docs/testing.md):

* **re-check survivors** after new tests were written: ``mutmut run`` copies the tests into ``mutants/`` when it
  starts, so tests written later are not seen until a new (slow) run::

      python benchmarks/mutation_recheck.py tests/test_value_checks.py --only shanshui.losses -k contrastive

* **finish a module** whose mutants mutmut had not reached (``--status "not checked"``) with a focused selection
  instead of every test that happens to execute the function (on a busy 2-core machine the end-to-end pipeline
  tests made mutmut take minutes per mutant)::

      python benchmarks/mutation_recheck.py tests/test_value_checks.py tests/test_properties.py \\
          --only shanshui.latent_ops --status "not checked" -k "slerp or alpha or vsds" --save

* **estimate a module's score from a random sample** when there is no time for all its mutants
  (``--sample N --seed S``: N mutants per module, drawn reproducibly)::

      python benchmarks/mutation_recheck.py tests/test_flow.py --only shanshui.flow.sofp \
          --status "not checked" --sample 40 --seed 0 --save

Each mutant runs only the tests of the selection that call its function: a first pass over the selection runs
with mutmut's "stats" mode switched on and records, per test, which mutated functions it reached (the
trampolines report every call). A mutant whose function no selected test reaches is "no tests" (not killed).
``--no-map`` runs the whole selection for every mutant instead.

mutmut's trampolines read ``MUTANT_UNDER_TEST`` at call time, so one pytest session per mutant runs exactly the
mutant mutmut generated. Each mutant runs in a forked child of this process (the imports are paid once): a
mutant that crashes the interpreter (e.g. a segmentation fault inside OpenCV) or runs past ``--timeout``
seconds counts as killed, as mutmut counts them, and the run goes on. ``--save`` records the verdicts in ``mutants/focused-results.json`` (which
``mutation_report.py`` merges, marked as such); mutmut's own records are not changed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import FOCUSED, load  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tests", nargs="+", help="test files (relative to the repository root) to run on each mutant")
    ap.add_argument("--only", default="", help="only mutants whose name contains this")
    ap.add_argument("--status", default="survived", help='mutmut status to (re)check: survived, "not checked", ...')
    ap.add_argument("-k", default=None, help="pytest -k expression to narrow the tests")
    ap.add_argument("--save", action="store_true", help=f"record verdicts in {FOCUSED}")
    ap.add_argument("--deadline", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--sample", type=int, default=None, help="run only N random mutants of each module")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one mutant may take (then: killed)")
    ap.add_argument("--shuffle", action="store_true",
                    help="run the mutants in a random order (seed --seed): a run cut short by --deadline is then a "
                         "random sample of the module instead of its first functions")
    ap.add_argument("--no-map", action="store_true",
                    help="run the whole selection for every mutant (default: only the tests that reach its function)")
    args = ap.parse_args()
    root = Path.cwd()
    saved_path = root / FOCUSED
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    if args.status == "survived":  # mutmut's survivors and those of earlier focused runs
        todo = sorted(n for s in load(root).values() for n, st in s.items()
                      if st in ("survived", "no tests") and args.only in n)
    else:
        todo = sorted(n for s in load(root, focused=False).values() for n, st in s.items()
                      if st == args.status and n not in saved and args.only in n)
    if args.sample is not None:
        todo = sample_per_module(todo, args.sample, args.seed)
    if args.shuffle:
        random.Random(args.seed).shuffle(todo)
    for t in args.tests:
        shutil.copy(root / t, root / "mutants" / t)
    os.chdir(root / "mutants")
    sys.path.insert(0, str(root / "mutants" / "src"))
    sys.path.insert(0, str(root / "mutants" / "tests"))
    import pytest

    base = ["-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:randomly", *args.tests]
    if args.k:
        base += ["-k", args.k]
    os.environ.pop("MUTANT_UNDER_TEST", None)
    hits = HitMap()
    with contextlib.redirect_stdout(io.StringIO()):
        clean = pytest.main(base) if args.no_map else hits.collect(pytest, base)
    if clean != 0:
        print(f"the tests fail without any mutant (exit {clean}); fix them first")
        return 1
    options = [a for a in base if a not in args.tests]
    if args.k:
        options = options[:-2]  # the node ids below are already the -k selection
    start, killed, done = time.time(), 0, 0
    selection = " ".join(args.tests) + (f" -k '{args.k}'" if args.k else "")
    for name in todo:
        if args.deadline and time.time() - start > args.deadline:
            break
        if args.no_map:
            status = run_isolated(pytest, base, name, args.timeout)
        else:
            tests = hits.tests_for(name)
            status = run_isolated(pytest, options + tests, name, args.timeout) if tests else "no tests"
        killed += status in KILLED
        done += 1
        print(f"{status:9s} {name}", flush=True)
        if args.save:
            verdict = "killed" if status in KILLED else status if status in ("survived", "no tests") else "suspicious"
            save_verdict(saved_path, name, {"status": verdict, "detail": status, "tests": selection})
    os.environ.pop("MUTANT_UNDER_TEST", None)
    print(f"{killed} of {done} killed ({len(todo) - done} not run) by {selection} in {time.time() - start:.0f} s")
    return 0


KILLED = ("killed", "crashed", "timeout")


def save_verdict(path: Path, name: str, record: dict) -> None:
    """Add one verdict to ``path`` under a lock, re-reading it first: several runs (e.g. one per module, side
    by side) may save into the same file."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = json.loads(path.read_text()) if path.exists() else {}
        saved[name] = record
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=1, ensure_ascii=False))
        os.replace(tmp, path)


class HitMap:
    """Which test reaches which mutated function: one pytest pass in mutmut's "stats" mode, with the
    trampolines' hit recorder replaced by one that files each hit under the running test's node id."""

    def __init__(self) -> None:
        self.by_function: dict[str, list[str]] = {}
        self._current: str | None = None

    def collect(self, pytest, args: list[str]) -> int:
        import mutmut.mutation.trampoline as trampoline

        def record(name: str, caller: str | None = None) -> None:
            if self._current is not None:
                tests = self.by_function.setdefault(name, [])
                if not tests or tests[-1] != self._current:
                    tests.append(self._current)

        hits = self

        class Plugin:  # log start/finish enclose the test's setup (fixtures), call and teardown
            def pytest_runtest_logstart(self, nodeid, location):
                hits._current = nodeid

            def pytest_runtest_logfinish(self, nodeid, location):
                hits._current = None

        original = trampoline.record_trampoline_hit
        trampoline.record_trampoline_hit = record
        os.environ["MUTANT_UNDER_TEST"] = "stats"
        try:
            return pytest.main(args, plugins=[Plugin()])
        finally:
            trampoline.record_trampoline_hit = original
            os.environ.pop("MUTANT_UNDER_TEST", None)

    def tests_for(self, mutant: str) -> list[str]:
        """Node ids (in run order) of the tests that called the function of ``mutant`` (``…__mutmut_N``)."""
        return list(dict.fromkeys(self.by_function.get(mutant.rsplit("__mutmut_", 1)[0], [])))


def sample_per_module(names: list[str], n: int, seed: int) -> list[str]:
    """``n`` mutants of each module (mutmut names them ``module.function__mutmut_K``), drawn with ``seed``."""
    by_module: dict[str, list[str]] = {}
    for name in names:
        by_module.setdefault(name.rsplit(".", 1)[0], []).append(name)
    rng = random.Random(seed)
    return sorted(m for group in by_module.values() for m in rng.sample(sorted(group), min(n, len(group))))


def run_isolated(pytest, base: list[str], name: str, timeout: float) -> str:
    """One pytest session with mutant ``name`` active, in a forked child: killed | survived | crashed | timeout |
    exit N (pytest's usage/internal errors)."""
    pid = os.fork()
    if pid == 0:  # child
        os.environ["MUTANT_UNDER_TEST"] = name
        code = 4
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = pytest.main(base)
        finally:
            os._exit(int(code))
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        return "crashed"
    code = os.WEXITSTATUS(status)
    return "killed" if code == 1 else "survived" if code == 0 else f"exit {code}"


if __name__ == "__main__":
    sys.exit(main())
