"""Per-module mutation scores from `mutmut results --all true` on stdin (see bench/mutation.sh);
with RECORD=1 in the environment the scores also replace bench/RESULTS.md's "Mutation testing"."""

import collections
import datetime
import os
import subprocess
import sys

THRESHOLD = 0.90


def main(reasons_file: str, modules: list[str]) -> int:
    reasons = {}
    for line in open(reasons_file):
        if line.strip() and not line.startswith("#"):
            name, _, reason = line.strip().partition(" ")
            reasons[name] = reason.strip()
    status = collections.defaultdict(collections.Counter)
    survivors = []
    for line in sys.stdin:
        name, _, result = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.rsplit(".", 1)[0]  # actsweep.stats.metrics.x_head_entropy__mutmut_3
        if modules and module not in modules:
            continue
        status[module][result] += 1
        if result != "killed":
            survivors.append((name, result))
    failed = False
    rows = []
    for module, counts in sorted(status.items()):
        total = sum(counts.values())
        score = counts["killed"] / total
        failed |= score < THRESHOLD
        rows.append(f"| {module} | {counts['killed']}/{total} | {score:.1%} |")
        print(f"{module:32s} {counts['killed']:4d} / {total:4d} killed  {score:6.1%}"
              + ("" if score >= THRESHOLD else "  BELOW 90 %"))
    for name, result in survivors:
        reason = reasons.get(name)
        failed |= reason is None
        print(f"  {result:12s} {name}: {reason or 'NO REASON GIVEN (see mutmut show ' + name + ')'}")
    # a reason for a mutant that no longer survives (killed now, or renamed) says nothing: prune it
    surviving = {name for name, _ in survivors}
    stale = [name for name in reasons if name.rsplit(".", 1)[0] in status and name not in surviving]
    for name in stale:
        print(f"  stale reason {name}: it does not survive this run; remove it from {reasons_file}")
    if os.environ.get("RECORD") and status:
        record(rows, len(survivors), os.environ.get("MUTMUT_SECONDS", "?"))
    return 1 if failed or not status else 0


def record(rows: list[str], survivors: int, seconds: str) -> None:
    from common import write_section

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    write_section("Mutation testing", (
        f"Commit {commit}, {datetime.date.today()}: `mutmut run` took {seconds} s; {survivors} survivors, each with "
        "its reason in bench/mutation_survivors.txt.\n\n| module | killed / mutants | score |\n|---|---|---|\n"
        + "\n".join(rows)), command_line="RECORD=1 bash bench/mutation.sh")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
