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

mutmut's trampolines read ``MUTANT_UNDER_TEST`` at call time, so one pytest session per mutant in this process runs
exactly the mutant mutmut generated. ``--save`` records the verdicts in ``mutants/focused-results.json`` (which
``mutation_report.py`` merges, marked as such); mutmut's own records are not changed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
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
    with contextlib.redirect_stdout(io.StringIO()):
        clean = pytest.main(base)
    if clean != 0:
        print(f"the tests fail without any mutant (exit {clean}); fix them first")
        return 1
    start, killed, done = time.time(), 0, 0
    selection = " ".join(args.tests) + (f" -k '{args.k}'" if args.k else "")
    for name in todo:
        if args.deadline and time.time() - start > args.deadline:
            break
        os.environ["MUTANT_UNDER_TEST"] = name
        with contextlib.redirect_stdout(io.StringIO()):
            code = pytest.main(base)
        status = "killed" if code == 1 else "survived" if code == 0 else f"exit {code}"
        killed += code == 1
        done += 1
        print(f"{status:9s} {name}", flush=True)
        if args.save:
            saved[name] = {"status": status if status in ("killed", "survived") else "suspicious",
                           "tests": selection}
            saved_path.write_text(json.dumps(saved, indent=1, ensure_ascii=False))
    os.environ.pop("MUTANT_UNDER_TEST", None)
    print(f"{killed} of {done} killed ({len(todo) - done} not run) by {selection} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
