"""Re-check the survivors of a `mutmut run` against the current tests, using mutmut's own mutants.

``mutmut run`` copies the tests into ``mutants/`` when it starts; tests written afterwards to kill its survivors
are not seen until a new (slow) run. This script copies the given test files into ``mutants/tests`` and runs them
against each surviving mutant in one process (mutmut's trampolines read ``MUTANT_UNDER_TEST`` at call time), so
every claim "killed by a new test" in docs/testing.md is checked against the very mutant mutmut generated::

    python benchmarks/mutation_recheck.py tests/test_value_checks.py --only shanshui.losses -k contrastive

It prints one line per survivor: ``killed`` or ``survived``. It does not change mutmut's own records.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import load  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tests", nargs="+", help="test files (relative to the repository root) to run on each survivor")
    ap.add_argument("--only", default="", help="only survivors whose name contains this")
    ap.add_argument("-k", default=None, help="pytest -k expression to narrow the tests")
    args = ap.parse_args()
    root = Path.cwd()
    survivors = sorted(n for s in load(root).values() for n, st in s.items()
                       if st in ("survived", "no tests") and args.only in n)
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
    killed = 0
    for name in survivors:
        os.environ["MUTANT_UNDER_TEST"] = name
        with contextlib.redirect_stdout(io.StringIO()):
            code = pytest.main(base)
        status = "killed" if code == 1 else "survived" if code == 0 else f"exit {code}"
        killed += code == 1
        print(f"{status:9s} {name}", flush=True)
    os.environ.pop("MUTANT_UNDER_TEST", None)
    print(f"{killed} of {len(survivors)} killed by {' '.join(args.tests)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
