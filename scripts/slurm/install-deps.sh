#!/usr/bin/env bash
# Install the Debian packages that scripts/slurm/cluster.sh and the real-Slurm test need:
# slurm-wlm (slurmctld, slurmd, sbatch, squeue, scancel, sinfo) and munge (its authentication).
#
# Needs root. Where apt-get is not available (not Debian/Ubuntu) it says so and exits 0: the test
# then skips with its own message (and fails under CI=true, where the packages are required).
set -euo pipefail

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: apt-get not found; install slurm-wlm and munge with this system's package manager" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: must run as root (apt-get install), e.g. sudo $0" >&2
    exit 1
fi

echo "+ apt-get update" >&2
apt-get update
echo "+ apt-get install -y slurm-wlm munge" >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge
