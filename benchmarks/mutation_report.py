"""Summarise a finished `mutmut run` (``make mutation``): mutants per module and status, the score, survivors.

Reads mutmut's own bookkeeping (``mutants/<module>.py.meta``) and classifies exit codes with mutmut's own table,
so the numbers are mutmut's. Run from the repository root after ``mutmut run``::

    python benchmarks/mutation_report.py            # table + surviving mutant names
    python benchmarks/mutation_report.py --diffs    # ... and each survivor's diff (mutmut show)

The score is killed / (killed + survived + timeout + suspicious): mutants that no selected test executes
("no tests") are listed separately instead of being counted as survivors, and a timeout counts as not killed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path


FOCUSED = "mutants/focused-results.json"


def load(root: Path, focused: bool = True) -> dict[str, dict[str, str]]:
    """module -> {mutant: status}. With ``focused``, verdicts of ``mutation_recheck.py --save`` replace mutmut's
    for the mutants it ran (a survivor re-checked with newer tests, or one mutmut had not reached)."""
    from mutmut.stats import status_by_exit_code

    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]
    extra = json.loads((root / FOCUSED).read_text()) if focused and (root / FOCUSED).exists() else {}
    out = {}
    for module in cfg["only_mutate"]:
        meta = root / "mutants" / (module + ".meta")
        if not meta.exists():
            out[module] = {}
            continue
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        out[module] = {name: extra[name]["status"] if name in extra else status_by_exit_code[code]
                       for name, code in codes.items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--diffs", action="store_true", help="print mutmut's diff of every survivor")
    args = ap.parse_args()
    root = Path.cwd()
    results = load(root)
    cols = ["killed", "survived", "timeout", "suspicious", "no tests", "not checked"]
    print("| module | mutants | " + " | ".join(cols) + " | score |")
    print("|---|---:|" + "---:|" * len(cols) + "---:|")
    total = Counter()
    for module, statuses in results.items():
        c = Counter(statuses.values())
        total.update(c)
        judged = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"]
        score = f"{100 * c['killed'] / judged:.1f} %" if judged else "–"
        print(f"| {module.removeprefix('src/shanshui/')} | {len(statuses)} | "
              + " | ".join(str(c[k]) for k in cols) + f" | {score} |")
    judged = total["killed"] + total["survived"] + total["timeout"] + total["suspicious"]
    score = f"{100 * total['killed'] / judged:.1f} %" if judged else "–"
    print(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[k]) for k in cols) + f" | **{score}** |")
    survivors = [n for s in results.values() for n, st in s.items() if st in ("survived", "suspicious", "timeout")]
    print(f"\n{len(survivors)} not killed:")
    for name in sorted(survivors):
        print(" ", name)
        if args.diffs:
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True)
            print(diff.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
