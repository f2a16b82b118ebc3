#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the tests that submit jobs
# through submitit and hydra-submitit-launcher (see README.md next to this file).
#
# usage: tests/slurm/slurm_local.sh start | stop [--purge] | restart | status
#
#   start    Install the Debian packages if they are missing, write
#            /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf, start munged,
#            a private MariaDB, slurmdbd, slurmctld and slurmd, and wait until
#            the node is idle. Safe to repeat: daemons that run are kept, except
#            that slurmctld and slurmd restart when slurm.conf changed.
#   stop     Cancel all jobs and stop the daemons this script started, by the
#            pid files in the state directory. --purge also deletes that
#            directory (job history included) and the two config files.
#   restart  stop, then start.
#   status   Show the daemons; exit 0 when the controller answers and sacct works.
#
# Environment (both optional):
#   SLURM_LOCAL_DIR      state, logs, pid files, MariaDB data (default /tmp/slurm-local)
#   SLURM_LOCAL_DB_PORT  port of the private MariaDB on 127.0.0.1 (default 13306)
#
# The cluster: partition "debug" (the default), one node "localhost" with all
# CPUs and 95% of the memory. Accounting (slurmdbd) is always on, because
# submitit reads job states from sacct: without it a job that dies without a
# result leaves job.result() waiting forever.
#
# Needs root (packages, /etc/slurm); it re-runs itself with sudo otherwise.
# Needs no systemd and no terminal: CI runs it as `env -i PATH=/usr/bin:/bin`.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
DB_PORT=${SLURM_LOCAL_DB_PORT:-13306}
PARTITION=debug
NODE=localhost          # not the hostname, so the config works on any machine
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARK="# written by tests/slurm/slurm_local.sh"
export PATH="$PATH:/usr/sbin:/sbin"   # the daemons live in sbin

say() { echo "slurm_local: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "run this as root: it installs packages and writes /etc/slurm"
  exec sudo env SLURM_LOCAL_DIR="$DIR" SLURM_LOCAL_DB_PORT="$DB_PORT" bash "$0" "$@"
fi

# --- processes -----------------------------------------------------------------

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null; }

# True when the pid file names a live process called $2 (pids get reused).
running() {  # pidfile name
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_daemon() {  # pidfile name
  if running "$1" "$2"; then
    local pid
    pid=$(cat "$1")
    kill "$pid" || true
    for _ in $(seq 60); do alive "$pid" || break; sleep 0.25; done
    if alive "$pid"; then
      say "$2 (pid $pid) ignored SIGTERM for 15 s; killing it"
      kill -9 "$pid" || true
    fi
    say "stopped $2"
  fi
  rm -f "$1"
}

wait_until() {  # seconds what command...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 4))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "$what is not ready after ${secs}s; read the logs in $DIR/log"
}

# --- packages and config ----------------------------------------------------------

install_packages() {
  local cmd missing=""
  for cmd in slurmctld slurmd sbatch sacct slurmdbd munged mariadbd; do
    command -v "$cmd" >/dev/null || missing="$missing $cmd"
  done
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null ||
    die "SLURM is not installed and there is no apt-get; install slurmctld, slurmd, slurmdbd, munge and MariaDB, then run this again"
  say "missing:$missing; installing the Debian packages (about half a minute; log in $DIR/log/apt.log)"
  # no questions: CI has no terminal. Recommends would pull in dozens of packages.
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client slurmdbd munge mariadb-server; } \
    </dev/null >"$DIR/log/apt.log" 2>&1 || die "apt-get failed; read $DIR/log/apt.log"
}

# Replace $2 by $1 when they differ; true when it did.
replace_if_changed() {  # new target
  if cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi
  mv "$1" "$2"
}

write_config() {
  local f hw layout mem
  for f in "$CONF" "$DBD_CONF"; do
    if [ -e "$f" ] && ! grep -qxF "$MARK" "$f"; then
      die "$f was not written by this script (a real cluster's?); move it away and run again"
    fi
  done
  install -d -m 0755 /etc/slurm
  # slurmd -C describes this machine: "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105"
  hw=$(slurmd -C | head -n 1)
  layout=$(sed -n 's/.*\(CPUs=.* ThreadsPerCore=[0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  if [ -z "$layout" ] || [ -z "$mem" ]; then die "cannot parse 'slurmd -C': $hw"; fi

  cat >"$CONF.new" <<EOF
$MARK
# SLURM_LOCAL_DIR=$DIR
ClusterName=localcluster
SlurmctldHost=localhost
# Root runs everything: no slurm-owned state directories needed.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again after cred_expire s (default 120).
AuthInfo=cred_expire=10
MpiDefault=none
# The cgroup plugins fail without a freezer cgroup, and still report COMPLETED.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
# Start jobs within ~1 s instead of several.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# submitit ignores SIGTERM: a cancelled job holds its CPU for KillWait s (default 30).
KillWait=5
MailProg=/bin/true
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# RealMemory must be set (submitit always asks for --mem) and a bit below the
# measured value, or the node drains.
NodeName=$NODE $layout RealMemory=$((mem * 95 / 100)) State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  cat >"$DBD_CONF.new" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmlocal
StorageLoc=slurm_acct_db
EOF
  chmod 0644 "$CONF.new"
  chmod 0600 "$DBD_CONF.new"   # slurmdbd refuses to read it otherwise

  # Running daemons keep the settings they started with.
  if replace_if_changed "$DBD_CONF.new" "$DBD_CONF"; then
    stop_daemon "$DIR/run/slurmdbd.pid" slurmdbd
  fi
  if replace_if_changed "$CONF.new" "$CONF"; then
    stop_daemon "$DIR/run/slurmd.pid" slurmd
    stop_daemon "$DIR/run/slurmctld.pid" slurmctld
  fi
}

# --- daemons -------------------------------------------------------------------

# Start a daemon without a terminal, its early output in a log, and without
# the lock on fd 9 (a daemon holding it would block every later run).
launch() {  # log command...
  local log=$1
  shift
  "$@" </dev/null >>"$log" 2>&1 9>&-
}

munge_ok() { munge -n </dev/null | unmunge >/dev/null; }

start_munge() {
  munge_ok 2>/dev/null && return 0   # ours, or a system service: either will do
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  # munged refuses a key that it does not own or that others can read
  chown munge:munge /etc/munge/munge.key
  chmod 0600 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge   # /run is emptied at boot
  launch "$DIR/log/munged.out" runuser -u munge -- munged
  touch "$DIR/run/munged.ours"
  wait_until 10 munged munge_ok
  say "started munged"
}

sql() { mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u root "$@"; }
db_ok() { sql -e 'SELECT 1'; }

start_database() {
  running "$DIR/run/mysqld.pid" mariadbd && return 0
  if [ ! -d "$DIR/mysql/mysql" ]; then
    rm -rf "$DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --skip-test-db \
      >"$DIR/log/mariadb-install-db.log" 2>&1 ||
      die "mariadb-install-db failed; read $DIR/log/mariadb-install-db.log"
  fi
  # A private server, so that a system MariaDB (if any) is left alone.
  launch /dev/null setsid --fork mariadbd --no-defaults --user=root --datadir="$DIR/mysql" \
    --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$DIR/log/mysqld.log" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
  wait_until 60 "mariadbd (port $DB_PORT)" db_ok
  sql <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmlocal';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmlocal';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
  say "started mariadbd"
}

start_slurm() {
  if ! running "$DIR/run/slurmdbd.pid" slurmdbd; then
    launch "$DIR/log/slurmdbd.out" slurmdbd
    wait_until 60 slurmdbd sacctmgr -n show cluster
    say "started slurmdbd"
  fi
  if ! running "$DIR/run/slurmctld.pid" slurmctld; then
    # it daemonizes before reading most of the config: check with ping, not its status
    launch "$DIR/log/slurmctld.out" slurmctld
    wait_until 30 slurmctld scontrol ping
    say "started slurmctld"
  fi
  if ! running "$DIR/run/slurmd.pid" slurmd; then
    launch "$DIR/log/slurmd.out" slurmd
    say "started slurmd"
  fi
  for i in $(seq 120); do
    sinfo -h -n "$NODE" -o %T | grep -qE '^(idle|mixed|allocated|completing)' && return 0
    # a node that an earlier run left down or drained comes back on request
    if [ $((i % 8)) = 0 ]; then
      scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.25
  done
  sinfo -R >&2 || true
  die "node $NODE is not idle after 30 s; read $DIR/log/slurmd.log"
}

# --- commands ---------------------------------------------------------------------

cmd_start() {
  local t0=$SECONDS
  mkdir -p "$DIR/log" "$DIR/run" "$DIR/state/ctld" "$DIR/state/d"
  install_packages
  write_config
  start_munge
  start_database
  start_slurm
  say "cluster up in $((SECONDS - t0)) s: partition $PARTITION on node $NODE, state in $DIR"
}

cmd_stop() {
  if running "$DIR/run/slurmctld.pid" slurmctld; then
    # jobs left behind would keep their processes after slurmd stops
    if [ -n "$(squeue -h -o %A)" ]; then
      say "cancelling all jobs"
      squeue -h -o %A | xargs scancel || true
      for _ in $(seq 120); do [ -z "$(squeue -h -o %A)" ] && break; sleep 0.25; done
    fi
  fi
  stop_daemon "$DIR/run/slurmd.pid" slurmd
  stop_daemon "$DIR/run/slurmctld.pid" slurmctld
  stop_daemon "$DIR/run/slurmdbd.pid" slurmdbd
  stop_daemon "$DIR/run/mysqld.pid" mariadbd
  if [ -e "$DIR/run/munged.ours" ]; then
    stop_daemon /run/munge/munged.pid munged
    rm -f "$DIR/run/munged.ours"
  fi
}

cmd_purge() {
  local f
  [ "$DIR" != / ] || die "SLURM_LOCAL_DIR=/ : refusing to delete it"
  say "deleting $DIR"
  rm -rf "$DIR"
  for f in "$CONF" "$DBD_CONF"; do
    if grep -qxF "$MARK" "$f" 2>/dev/null; then rm -f "$f"; fi
  done
}

show_daemon() {  # pidfile name
  if running "$1" "$2"; then say "$2: running"; else say "$2: stopped"; fi
}

cmd_status() {
  if munge_ok 2>/dev/null; then say "munged: running"; else say "munged: stopped"; fi
  show_daemon "$DIR/run/mysqld.pid" mariadbd
  show_daemon "$DIR/run/slurmdbd.pid" slurmdbd
  show_daemon "$DIR/run/slurmctld.pid" slurmctld
  show_daemon "$DIR/run/slurmd.pid" slurmd
  scontrol ping && sinfo && sacct -n -X -S now >/dev/null
}

mkdir -p "$DIR"
# two starts at once (two CI steps, two colleagues) would race on the pid files
exec 9>"$DIR/.lock"
flock -w 300 9 || die "another slurm_local.sh holds $DIR/.lock for 5 min; is it stuck?"

case "${1:-} ${2:-}" in
  "start ")       cmd_start ;;
  "stop ")        cmd_stop ;;
  "stop --purge") cmd_stop; cmd_purge ;;
  "restart ")     cmd_stop; cmd_start ;;
  "status ")      cmd_status ;;
  *) echo "usage: $0 start | stop [--purge] | restart | status" >&2; exit 2 ;;
esac
