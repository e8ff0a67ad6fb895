"""Per-module mutation scores from mutmut's results in a staging folder (hack/mutation.sh).

score = (killed + timeouts) / (mutants - equivalent mutants). Equivalent mutants are the ones
listed, each with its reason, in hack/mutation-equivalent/<module>.txt. Survivors go to
survivors.txt in the staging folder (see one with `cd .mutation && mutmut show NAME`). Exits 1
when a module scores below the bar, or when its list is stale: a mutant listed as equivalent was
killed, or no mutant of that name exists any more (mutmut numbers a function's mutants, so a
change to the function renames them).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENT = REPO / "hack" / "mutation-equivalent"
BAR = 0.90

# mutmut's exit codes (mutmut/stats.py): 1 and 3 are kills, 36 and the SIGXCPU codes timeouts.
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
NO_TESTS = {5, 33}


def equivalents(module: str) -> dict[str, str]:
    """The mutants of one module (src/.../<name>.py) listed in <name>.txt, with their reasons."""
    found: dict[str, str] = {}
    listing = EQUIVALENT / f"{Path(module).stem}.txt"
    if listing.exists():
        for line in listing.read_text().splitlines():
            name, _, why = line.partition("#")
            if name.strip():
                found[name.strip()] = why.strip()
    return found


def main(stage: Path, modules: list[str]) -> int:
    survivors: list[str] = []
    failed = False
    print(
        f"{'module':38} {'mutants':>7} {'killed':>6} {'timeout':>7} {'equiv':>5} "
        f"{'survived':>8} {'no tests':>8} {'score':>6}"
    )
    for module in modules:
        meta = json.loads((stage / "mutants" / f"{module}.meta").read_text())
        codes: dict[str, int | None] = meta["exit_code_by_key"]
        equivalent = equivalents(module)
        for name in sorted(equivalent.keys() - codes.keys()):
            listing = f"hack/mutation-equivalent/{Path(module).stem}.txt"
            print(
                f"stale: {name} is listed in {listing} but no such mutant exists (renumbered?)",
                file=sys.stderr,
            )
            failed = True
        counts: Counter[str] = Counter()
        for name, code in codes.items():
            if name in equivalent:
                counts["equivalent"] += 1
                if code in KILLED or code in TIMEOUT:
                    print(f"stale: {name} is listed as equivalent but was killed", file=sys.stderr)
                    failed = True
            elif code in KILLED:
                counts["killed"] += 1
            elif code in TIMEOUT:
                counts["timeout"] += 1
            elif code in NO_TESTS:
                counts["no tests"] += 1
                survivors.append(name)
            else:  # survived, not checked, suspicious, segfault: not a kill
                counts["survived"] += 1
                survivors.append(name)
        judged = len(codes) - counts["equivalent"]
        score = (counts["killed"] + counts["timeout"]) / judged if judged else 1.0
        failed |= score < BAR
        print(
            f"{module.removeprefix('src/'):38} {len(codes):7} {counts['killed']:6} "
            f"{counts['timeout']:7} {counts['equivalent']:5} {counts['survived']:8} "
            f"{counts['no tests']:8} {score:6.1%}"
        )
    (stage / "survivors.txt").write_text("".join(f"{s}\n" for s in survivors))
    print(f"{len(survivors)} survivors in {stage}/survivors.txt; bar {BAR:.0%} per module")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
