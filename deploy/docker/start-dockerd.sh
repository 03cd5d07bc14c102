#!/usr/bin/env bash
# Starts a Docker engine for Gantry's docker driver tests, unless one already
# answers. Usage: start-dockerd.sh [DIR]
#
# It installs Debian's docker.io when dockerd is missing (needs root), then
# runs dockerd in the background the way CI machines allow: vfs storage (no
# overlayfs inside a container), no iptables and no bridge (containers use
# the host network). The engine listens on the default socket,
# /var/run/docker.sock, so that `docker` and client.FromEnv find it without
# DOCKER_HOST. DIR (default /var/lib/gantry-docker) holds its data, pidfile
# and log.
set -euo pipefail
dir=${1:-/var/lib/gantry-docker}

if docker info >/dev/null 2>&1; then
	exit 0
fi
if ! command -v dockerd >/dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io
fi

mkdir -p "$dir"
# A dockerd killed hard leaves its pidfile behind and refuses to start.
if [ -f "$dir/dockerd.pid" ] && ! kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
	rm -f "$dir/dockerd.pid"
fi
nohup dockerd \
	--storage-driver vfs --iptables=false --ip6tables=false --bridge=none \
	--data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
	>"$dir/dockerd.log" 2>&1 </dev/null &

for _ in $(seq 1 300); do
	if docker info >/dev/null 2>&1; then
		echo "dockerd is up (data in $dir, log $dir/dockerd.log)"
		exit 0
	fi
	sleep 0.1
done
echo "dockerd did not answer within 30 s; its log ($dir/dockerd.log) ends with:" >&2
tail -n 20 "$dir/dockerd.log" >&2
exit 1
