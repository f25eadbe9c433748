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


def main() -> int:
    from mutmut.__main__ import create_mutants_for_file

    root = Path.cwd()
    if not (root / "mutants" / "src").is_dir():
        from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir

        print("no mutants/ folder: creating it (mutmut's copy of src/, tests/ and pyproject.toml)")
        (root / "mutants").mkdir(exist_ok=True)
        copy_src_dir()
        copy_also_copy_files()
    mutated = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"])
    focused_path = root / FOCUSED
    focused = json.loads(focused_path.read_text()) if focused_path.exists() else {}
    dropped = 0
    for src in sorted((root / "src").rglob("*.py")):
        rel = src.relative_to(root)
        copy = root / "mutants" / rel
        if str(rel) in mutated:
            result = create_mutants_for_file(rel, Path("mutants") / rel)
            if result.error:
                raise result.error
            changed = set(result.changed_functions or ())
            if changed:
                stale = [n for n in focused if n.split("__mutmut_")[0] in changed]
                for n in stale:
                    del focused[n]
                dropped += len(stale)
                print(f"{rel}: re-mutated; changed: {', '.join(sorted(changed))} ({len(stale)} focused verdicts dropped)")
        elif not copy.exists() or not filecmp.cmp(src, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy)
            print(f"{rel}: copied")
    if dropped:
        focused_path.write_text(json.dumps(focused, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
