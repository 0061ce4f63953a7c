#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the modules that compute reported numbers, with their fast tests:
# which modules and which tests are set in pyproject.toml under [tool.mutmut]. .ci/run runs it last.
#
#   pip install -e ".[mutation]"
#   bench/mutation.sh                          # every module (bench/RESULTS.md: its last time)
#   bench/mutation.sh actsweep.stats.metrics   # one module while developing
#   RECORD=1 bench/mutation.sh                 # and write the scores into bench/RESULTS.md
#
# Prints killed / total per module and every surviving mutant with its reason from
# bench/mutation_survivors.txt (and each reason that no surviving mutant uses any more, to prune);
# exits 1 when a module is below 90 % or a survivor has no reason.
set -euo pipefail
cd "$(dirname "$0")/.."
unset PYTHONPATH  # the tests must import the mutated copy under mutants/, not this tree
export OMP_NUM_THREADS=1
rm -rf mutants  # no stale results from an earlier version of the code or the tests
patterns=()
for module in "$@"; do patterns+=("$module.*"); done
log=$(mktemp)
start=$SECONDS
python -m mutmut run --max-children "${JOBS:-2}" "${patterns[@]}" > "$log" 2>&1 || { tail -c 2000 "$log"; exit 1; }
echo "mutmut run: $((SECONDS - start)) s"
export MUTMUT_SECONDS=$((SECONDS - start))   # for RECORD=1 (bench/mutation_scores.py)
python -m mutmut results --all true 2>/dev/null | python bench/mutation_scores.py bench/mutation_survivors.txt "$@"
