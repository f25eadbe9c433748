"""Summarise a finished `mutmut run` (``make mutation``): mutants per module and status, the score, survivors.

Reads mutmut's own bookkeeping (``mutants/<module>.py.meta``) and classifies exit codes with mutmut's own table,
so the numbers are mutmut's. Run from the repository root after ``mutmut run``::

    python benchmarks/mutation_report.py            # table + surviving mutant names
    python benchmarks/mutation_report.py --diffs    # ... and each survivor's diff (mutmut show)

The score is killed / (killed + survived + timeout + suspicious): mutants that no selected test executes
("no tests") are listed separately instead of being counted as survivors, and a timeout counts as not killed.
Survivors judged equivalent (no input can tell them from the real code) are listed with their reason in
``benchmarks/results/mutation_equivalents.tsv``; the table counts them in the "equivalent" column, and the
second score leaves them out of the denominator. Survivors without a reason are listed as "unexplained".
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
EQUIVALENTS = "benchmarks/results/mutation_equivalents.tsv"


def load_equivalents(root: Path) -> dict[str, str]:
    """mutant name -> the reason it is equivalent (``NAME<TAB>reason`` lines; ``#`` starts a comment line)."""
    path = root / EQUIVALENTS
    if not path.exists():
        return {}
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, reason = line.partition("\t")
        if not sep or not reason.strip():
            raise SystemExit(f"error: {EQUIVALENTS}:{number}: expected NAME<TAB>reason, got {line!r}")
        out[name.strip()] = reason.strip()
    return out


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
    equivalents = load_equivalents(root)
    not_killed = ("survived", "suspicious", "timeout")
    cols = ["killed", "survived", "timeout", "suspicious", "no tests", "not checked"]
    print("| module | mutants | " + " | ".join(cols) + " | equivalent | score | score without equivalents |")
    print("|---|---:|" + "---:|" * (len(cols) + 3))
    total = Counter()
    for module, statuses in list(results.items()) + [("all", None)]:
        if statuses is None:
            c, n, name = total, sum(total.values()) - total["equivalent"], "**all**"
        else:
            c = Counter(statuses.values())
            c["equivalent"] = sum(st in not_killed and m in equivalents for m, st in statuses.items())
            total.update(c)
            n, name = len(statuses), module.removeprefix("src/shanshui/")
        judged = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"]
        score = f"{100 * c['killed'] / judged:.1f} %" if judged else "–"
        real = judged - c["equivalent"]
        score2 = f"{100 * c['killed'] / real:.1f} %" if real else "–"
        if statuses is None:
            score, score2 = f"**{score}**", f"**{score2}**"
        print(f"| {name} | {n} | " + " | ".join(str(c[k]) for k in cols) + f" | {c['equivalent']} | {score} | {score2} |")
    survivors = sorted(n for s in results.values() for n, st in s.items() if st in not_killed)
    unexplained = [n for n in survivors if n not in equivalents]
    print(f"\n{len(survivors)} not killed: {len(survivors) - len(unexplained)} equivalent ({EQUIVALENTS}), "
          f"{len(unexplained)} unexplained:")
    for name in unexplained:
        print(" ", name)
        if args.diffs:
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True)
            print(diff.stdout)
    stale = sorted(set(equivalents) - set(survivors))
    if stale:
        print(f"\n{len(stale)} names in {EQUIVALENTS} are not survivors (killed since, or renamed):")
        for name in stale:
            print(" ", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
