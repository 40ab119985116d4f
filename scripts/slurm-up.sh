#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, from Debian packages, for covpipe's tests and
# for trying `snakemake --workflow-profile profiles/slurm` without a cluster.
#
#   scripts/slurm-up.sh                 install what is missing, then start what is not running
#   scripts/slurm-up.sh --install-only  only install the packages (munge, slurmctld, slurmd,
#                                       slurmdbd, slurm-client, mariadb-server)
#   scripts/slurm-up.sh --hold PID      also register PID as a user of the cluster
#   scripts/slurm-down.sh [--release PID]
#                                       stop exactly the daemons this script started, unless
#                                       another live PID still holds the cluster
#
# Daemons are started directly (containers have no systemd): munged, MariaDB (socket only, no
# TCP port), slurmdbd (accounting: the snakemake slurm executor polls `sacct`), slurmctld and
# slurmd. The cluster "covpipe" and the account "covpipe" (user root) are registered with
# sacctmgr. Idempotent: a second call starts nothing that runs and re-registers nothing.
# Needs root and Debian's package registry, nothing else from the network. Everything it writes
# lives under /etc/slurm (marked as covpipe's; a foreign slurm.conf is never overwritten),
# /var/lib/covpipe-slurm, /var/log/covpipe-slurm and /run/covpipe-slurm.
set -euo pipefail

CLUSTER=covpipe
ACCOUNT=covpipe
STATE=/var/lib/covpipe-slurm
LOGS=/var/log/covpipe-slurm
RUN=/run/covpipe-slurm
MARK="# covpipe single-node test cluster (scripts/slurm-up.sh)"
PACKAGES=(munge slurmctld slurmd slurmdbd slurm-client mariadb-server)

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs packages and starts daemons)"

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get to install them"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d may refuse to start services at install time: we start them ourselves below
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

HOLD=
case "${1:-}" in
    --install-only) install_packages; exit 0 ;;
    --hold) HOLD=${2:?--hold needs a PID} ;;
    "") ;;
    *) die "unknown argument '$1'; use --install-only or --hold PID" ;;
esac

mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN/holders"
# one slurm-up or slurm-down at a time (test runs of several checkouts may share this machine);
# the daemons are started with fd 9 closed, so they do not keep the lock
exec 9>"$RUN/lock"
flock 9
install_packages
touch "$RUN/started"
[ -n "$HOLD" ] && touch "$RUN/holders/$HOLD"

# running NAME PIDFILE: is the daemon recorded in PIDFILE alive?
running() { [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; }
# started NAME PIDFILE: remember that we started it, for slurm-down.sh
started() { grep -q "^$1 " "$RUN/started" || echo "$1 $2" >>"$RUN/started"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what not ready after ${limit}s; see $LOGS"
}

# ---- munge: authentication between the SLURM daemons and commands --------------------------
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged 9>&-
    wait_for 10 munged sh -c 'munge -n | unmunge'
    started munged /run/munge/munged.pid
fi

# ---- MariaDB: the accounting database of slurmdbd ------------------------------------------
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
    say "initialising the MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOGS/mariadb-install.log" 2>&1
fi
if mariadb -e "select 1" >/dev/null 2>&1; then
    say "MariaDB already running"
else
    say "starting MariaDB (socket /run/mysqld/mysqld.sock, no TCP)"
    nohup /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking \
        --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
        --log-error="$LOGS/mariadb.log" >/dev/null 2>&1 9>&- &
    wait_for 60 MariaDB mariadb -e "select 1"
    started mariadb /run/mysqld/mysqld.pid
fi
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'covpipe-slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# ---- configuration ------------------------------------------------------------------------
mkdir -p /etc/slurm
if [ -e /etc/slurm/slurm.conf ] && ! grep -qxF "$MARK" /etc/slurm/slurm.conf; then
    die "/etc/slurm/slurm.conf exists and is not covpipe's: this machine has its own SLURM; use it"
fi
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
cat >/etc/slurm/slurm.conf <<CONF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# no cgroups in a container: track processes through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# accounting through slurmdbd, so that sacct (polled by the snakemake executor) works
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# finished jobs stay visible to squeue a while too
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
cat >/etc/slurm/slurmdbd.conf <<CONF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=covpipe-slurm
StorageLoc=slurm_acct_db
CONF
chmod 0600 /etc/slurm/slurmdbd.conf

# ---- slurmdbd, the cluster and the account -------------------------------------------------
if running slurmdbd "$RUN/slurmdbd.pid"; then
    say "slurmdbd already running"
else
    say "starting slurmdbd"
    /usr/sbin/slurmdbd 9>&-
    wait_for 60 slurmdbd sacctmgr -n show cluster
    started slurmdbd "$RUN/slurmdbd.pid"
fi
if [ -z "$(sacctmgr -n -P show cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if [ -z "$(sacctmgr -n -P show account "$ACCOUNT" format=account)" ]; then
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="covpipe tests" Organization=covpipe >/dev/null
fi
if [ -z "$(sacctmgr -n -P show assoc where user=root account="$ACCOUNT" format=user)" ]; then
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
fi

# ---- slurmctld and slurmd ------------------------------------------------------------------
if running slurmctld "$RUN/slurmctld.pid"; then
    say "slurmctld already running"
else
    say "starting slurmctld"
    /usr/sbin/slurmctld 9>&-
    wait_for 60 slurmctld scontrol ping
    started slurmctld "$RUN/slurmctld.pid"
fi
if running slurmd "$RUN/slurmd.pid"; then
    say "slurmd already running"
else
    say "starting slurmd (node $NODE, $CPUS CPUs, ${MEM_MB} MB)"
    /usr/sbin/slurmd -N "$NODE" 9>&-
    started slurmd "$RUN/slurmd.pid"
fi
idle() { sinfo -h -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated)'; }
if ! wait_for 60 "node $NODE" idle 2>/dev/null; then
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    wait_for 30 "node $NODE" idle
fi
say "cluster $CLUSTER up: $(sinfo -h -o '%P %D %T %C') (partition nodes state CPUs A/I/O/T); account $ACCOUNT"
