#!/usr/bin/env bash
# Builds the worker image for models that the Python runtime serves
# (sklearn, pytorch, custom pyfunc): the image that `gantry dev --driver
# docker` and Nomad's docker task driver run for them, named by
# --python-image. The default worker image is FROM scratch and cannot hold
# an interpreter.
#
# No registry is reachable where Gantry is tested, so there is no base
# image to start FROM: mmdebstrap builds a Debian root filesystem from the
# Debian mirror apt uses, with python3 and the libraries the models need,
# and `docker import` makes it a base image. The base is tagged by its
# package list and built only when missing (about a minute and a half);
# the gantry binary goes on top with an ordinary build, in seconds.
#
# Usage: python-image.sh TAG GANTRY_BINARY [PACKAGE...]
# PACKAGEs are Debian packages (default: python3-numpy python3-pandas
# python3-sklearn). A model that needs more (python3-torch) needs an image
# with them, or its deployment fails naming the missing module. SUITE
# (default bookworm) and MIRROR (default Debian's) are environment
# variables.
set -euo pipefail
usage="usage: python-image.sh TAG GANTRY_BINARY [PACKAGE...]"
tag=${1:?$usage}
bin=${2:?$usage}
shift 2
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(python3-numpy python3-pandas python3-sklearn)
fi
suite=${SUITE:-bookworm}
include=$(IFS=,; echo "python3,ca-certificates,${pkgs[*]}")
# The tag changes with what goes into the base, this script's settings
# included (v2).
base="gantry-python-base:$suite-$(echo "v2 $include ${MIRROR:-}" | sha256sum | cut -c1-12)"

if ! docker image inspect "$base" >/dev/null 2>&1; then
	if ! command -v mmdebstrap >/dev/null; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap
	fi
	# minbase has no init and no recommends; the dpkg paths keep
	# documentation, man pages and translations out.
	mmdebstrap --quiet --variant=minbase --include="$include" \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
		"$suite" - ${MIRROR:+"$MIRROR"} |
		docker import \
			--change 'LABEL io.gantry.worker-image=true' \
			--change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
			--change 'ENTRYPOINT ["/usr/local/bin/gantry"]' \
			--change 'CMD ["worker", "--model-dir", "/model"]' \
			- "$base" >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/gantry"
# One step: with the legacy builder and vfs storage (CI's) each step copies
# the whole root filesystem, and an intermediate image would be dangling
# while the build runs, where a test's `docker image prune` of the worker
# images (the label comes from the base) would take it from under the
# build. The base sets the label, PATH, entrypoint and command.
printf 'FROM %s\nCOPY gantry /usr/local/bin/gantry\n' "$base" >"$ctx/Dockerfile"
# The legacy builder: Debian's docker.io has no buildx.
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null 2>"$ctx/err" || {
	cat "$ctx/err" >&2
	exit 1
}
echo "built $tag: $base (python3 ${pkgs[*]}) and the gantry binary"
