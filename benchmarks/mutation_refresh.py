"""Create ``mutants/``, or bring it up to date with the sources after they changed, without a (slow) ``mutmut run``.

Without a ``mutants/`` folder it is made the way ``mutmut run`` makes it (mutmut's own copy of ``src/``, the tests
and ``pyproject.toml``, then every module of ``[tool.mutmut] only_mutate`` mutated); every mutant is then "not
checked" until ``benchmarks/mutation_focused.sh`` judges it.

Every file under ``src/`` whose content differs from its copy in ``mutants/src/`` is refreshed: a mutated module
(``[tool.mutmut] only_mutate``) is re-mutated with mutmut's own ``create_mutants_for_file``, which keeps the
verdicts of functions whose code did not change and resets those of changed functions to "not checked"; the
focused verdicts (``mutants/focused-results.json``) of changed functions are dropped too. Other files are copied.

    python benchmarks/mutation_refresh.py
"""

from __future__ import annotations

import filecmp
import json
import shutil
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_report import FOCUSED  # noqa: E402


def drop_focused_verdicts(path: Path, functions: set[str]) -> int:
    """Remove the verdicts of mutants of ``functions`` from ``path``, under the lock ``save_verdict`` takes (a
    focused run may be saving verdicts at the same time); returns how many were removed."""
    import fcntl

    if not path.exists():
        return 0
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = json.loads(path.read_text())
        stale = [n for n in saved if n.split("__mutmut_")[0] in functions]
        for n in stale:
            del saved[n]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=1, ensure_ascii=False))
        tmp.replace(path)
    return len(stale)


def main() -> int:
    from mutmut.__main__ import create_mutants_for_file

    root = Path.cwd()
    creating = not (root / "mutants" / "src").is_dir()
    if creating:
        from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

        print("no mutants/ folder: creating it (mutmut's copy of src/, tests/ and pyproject.toml)")
        (root / "mutants").mkdir(exist_ok=True)
        copy_src_dir()
        copy_also_copy_files()
    mutated = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"])
    changed: set[str] = set()
    for src in sorted((root / "src").rglob("*.py")):
        rel = src.relative_to(root)
        copy = root / "mutants" / rel
        if str(rel) in mutated:
            result = create_mutants_for_file(rel, Path("mutants") / rel)
            if result.error:
                raise result.error
            if creating:
                print(f"{rel}: mutated")
            elif result.changed_functions:
                changed |= set(result.changed_functions)
                print(f"{rel}: re-mutated; changed: {', '.join(sorted(result.changed_functions))}")
        elif not copy.exists() or not filecmp.cmp(src, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy)
            print(f"{rel}: copied")
    if changed:
        print(f"{drop_focused_verdicts(root / FOCUSED, changed)} focused verdicts of changed functions dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
