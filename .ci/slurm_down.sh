#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm_up.sh.
#   --purge   also wipe slurm state/spool/log dirs and the slurmdbd accounting DB
#             (clean state for the next up; job ids restart at 1)
#   --all     also stop munged (and mariadb if it was started)
set -uo pipefail
PURGE=0; ALL=0
for a in "$@"; do case $a in --purge) PURGE=1;; --all) ALL=1;; esac; done

pids_of() { # name pidfile -> pids (pidfile first, else by exact process name)
  local pid
  pid=$(cat "$2" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; else pgrep -x "$1" | tr '\n' ' '; fi
}
stop_all() { # send TERM to all given pids at once, wait <=10 s, then KILL
  local pids="$*" alive
  [ -z "${pids// /}" ] && return 0
  kill $pids 2>/dev/null || true
  for _ in $(seq 100); do
    alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && return 0
    sleep 0.1
  done
  kill -9 $alive 2>/dev/null || true
}

# best-effort: drop queued/running jobs (only if the controller is up; scancel
# would otherwise retry for MessageTimeout seconds)
if pgrep -x slurmctld >/dev/null; then timeout 5 scancel --quiet -u root 2>/dev/null || true; fi
stop_all $(pids_of slurmd /run/slurm/slurmd.pid) $(pids_of slurmctld /run/slurm/slurmctld.pid) \
         $(pids_of slurmdbd /run/slurm/slurmdbd.pid)
# job step daemons that may linger
for p in $(pgrep -x slurmstepd); do kill -9 "$p" 2>/dev/null || true; done
rm -f /run/slurm/*.pid

if [ $PURGE = 1 ] && command -v mysql >/dev/null && mysqladmin ping >/dev/null 2>&1; then
  # job ids restart at 1 after a purge: empty the job tables of the accounting
  # DB too, or sacct would mix old and new jobs with the same id. (Truncating is
  # much faster than DROP DATABASE: slurmdbd needs ~6 s to recreate the schema.)
  for t in $(mysql -N -e "SELECT table_name FROM information_schema.tables WHERE table_schema='slurm_acct_db'
        AND (table_name LIKE '%\_job\_table' OR table_name LIKE '%\_step\_table' OR table_name LIKE '%\_job\_env\_table'
             OR table_name LIKE '%\_job\_script\_table' OR table_name LIKE '%\_suspend\_table')" 2>/dev/null); do
    mysql -e "TRUNCATE TABLE slurm_acct_db.\`$t\`" 2>/dev/null || true
  done
fi
if [ $ALL = 1 ]; then
  stop_all $(pids_of munged /run/munge/munged.pid)
  if command -v mysqladmin >/dev/null && mysqladmin ping >/dev/null 2>&1; then mysqladmin shutdown 2>/dev/null || true; fi
fi
if [ $PURGE = 1 ]; then
  rm -rf /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
fi
echo "[slurm_down] stopped" >&2
