# shellcheck shell=bash
# scripts/lib.sh — helpers shared by scripts/test, scripts/demo and scripts/bench (sourced, not run).
# Expects the caller to have done `set -euo pipefail` and `cd` to the repository root.

WHITTLE_ROOT=$(pwd)

log() { printf '[%s] %s\n' "${LOG_TAG:-whittle}" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

need_root() {
	[[ $(id -u) == 0 ]] || die "run as root (fixtures need chroot and mounts; tests talk to the Docker Engine)"
}

# need_pkgs PKG...: apt-get install the Debian packages that are not installed yet (idempotent).
APT_UPDATED=
need_pkgs() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing missing Debian packages: ${missing[*]}"
	if [[ -z $APT_UPDATED ]]; then
		apt-get update -qq >&2
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# need_monitoring: Prometheus and PCP (pmcd, pmdaopenmetrics, pmrep) for the metrics tests.
# pcp's postinst starts pmcd through systemctl, which fails where systemd is not PID 1 (CI VMs,
# containers) and leaves the package half configured; the tests start pmcd themselves, so the
# package scripts run with a no-op systemctl first on PATH there.
need_monitoring() {
	local shim
	shim=$(mktemp -d)
	if [[ $(cat /proc/1/comm 2>/dev/null) != systemd ]]; then
		printf '#!/bin/sh\nexit 0\n' >"$shim/systemctl"
		chmod +x "$shim/systemctl"
	fi
	PATH="$shim:$PATH" need_pkgs prometheus pcp python3-pcp tmux
	if dpkg-query -W -f='${Status}' pcp 2>/dev/null | grep -qv 'install ok installed'; then
		PATH="$shim:$PATH" dpkg --configure -a >&2
	fi
	rm -rf "$shim"
}

# need_runtime: the real peers of the runtime commands (route, logs, harden, debug). Their package
# scripts would start system daemons (haproxy, rsyslogd) that the tests do not want; the tests
# start their own instances, so service starts are refused while the packages are configured
# (a policy-rc.d on PATH is not consulted, hence the invoke-rc.d and systemctl shims).
need_runtime() {
	local shim
	shim=$(mktemp -d)
	printf '#!/bin/sh\nexit 0\n' >"$shim/systemctl"
	printf '#!/bin/sh\nexit 0\n' >"$shim/invoke-rc.d"
	chmod +x "$shim/systemctl" "$shim/invoke-rc.d"
	PATH="$shim:$PATH" need_pkgs haproxy rsyslog rsyslog-relp hey wrk gdb openjdk-17-jdk-headless seccomp
	rm -rf "$shim"
}

# need_swarm: a single-node Docker Swarm on the engine (route and debug test Swarm services).
need_swarm() {
	local state
	state=$(docker info --format '{{.Swarm.LocalNodeState}}')
	[[ $state == active ]] && return 0
	log "docker swarm init --advertise-addr 127.0.0.1 (swarm was $state)"
	docker swarm init --advertise-addr 127.0.0.1 >/dev/null ||
		die "docker swarm init --advertise-addr 127.0.0.1 failed"
}

need_cargo() {
	command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
}

# need_rust: cargo with rustfmt and clippy (added through rustup when it manages the toolchain).
need_rust() {
	need_cargo
	local c missing=()
	for c in fmt clippy; do
		cargo "$c" --version >/dev/null 2>&1 || missing+=("$c")
	done
	((${#missing[@]} == 0)) && return 0
	if command -v rustup >/dev/null; then
		log "adding rustup components: rustfmt clippy"
		rustup component add rustfmt clippy >&2
	else
		die "cargo ${missing[*]} missing and no rustup to add them"
	fi
}

need_docker() {
	docker info >/dev/null 2>&1 || die "the Docker Engine is not reachable (docker info failed); start dockerd"
}

# setup_podman: podman as root with a store of its own and rlimits this machine allows.
# Exports CONTAINERS_STORAGE_CONF and CONTAINERS_CONF (files in scripts/podman/), and
#   WHITTLE_PODMAN_ARGS      global flags that select the same store explicitly:
#                            podman $WHITTLE_PODMAN_ARGS load -i X.tar
#   WHITTLE_PODMAN_RUN_ARGS  flags for `podman run` (same limits as containers.conf)
setup_podman() {
	export CONTAINERS_STORAGE_CONF=$WHITTLE_ROOT/scripts/podman/storage.conf
	export CONTAINERS_CONF=$WHITTLE_ROOT/scripts/podman/containers.conf
	export WHITTLE_PODMAN_ARGS="--root /var/lib/whittle-podman/storage --runroot /run/whittle-podman --storage-driver overlay"
	export WHITTLE_PODMAN_RUN_ARGS="--ulimit nofile=4096:4096 --ulimit nproc=16384:16384"
	mkdir -p /var/lib/whittle-podman/storage /run/whittle-podman
	# shellcheck disable=SC2086 # the flags are meant to split
	podman $WHITTLE_PODMAN_ARGS info >/dev/null 2>&1 ||
		die "podman does not work with: podman $WHITTLE_PODMAN_ARGS info"
}

# step NAME CMD...: run one step, timing it; the failing step is named.
STEP_SUMMARY=()
step() {
	local name=$1 t0 rc=0
	shift
	log "── $name: $*"
	t0=$(date +%s)
	"$@" || rc=$?
	STEP_SUMMARY+=("$(printf '%-8s %4ss  %s' "$([[ $rc == 0 ]] && echo ok || echo FAILED)" "$(($(date +%s) - t0))" "$name")")
	if [[ $rc != 0 ]]; then
		log "step '$name' failed (exit $rc)"
		print_summary
		exit "$rc"
	fi
}
print_summary() {
	local s
	log "summary:"
	for s in "${STEP_SUMMARY[@]}"; do log "  $s"; done
}
