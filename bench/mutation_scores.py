"""Per-module mutation scores from `mutmut results --all true` on stdin (see bench/mutation.sh)."""

import collections
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
    for module, counts in sorted(status.items()):
        total = sum(counts.values())
        score = counts["killed"] / total
        failed |= score < THRESHOLD
        print(f"{module:32s} {counts['killed']:4d} / {total:4d} killed  {score:6.1%}"
              + ("" if score >= THRESHOLD else "  BELOW 90 %"))
    for name, result in survivors:
        reason = reasons.get(name)
        failed |= reason is None
        print(f"  {result:12s} {name}: {reason or 'NO REASON GIVEN (see mutmut show ' + name + ')'}")
    return 1 if failed or not status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
