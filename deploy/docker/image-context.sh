#!/bin/sh
# image-context.sh BINARY DIR: lay out the worker image's files in DIR: the
# gantry binary and the C libraries the dynamic loader needs to start it.
#
# gantry is built with CGO_ENABLED=0, but the GGUF runtime loads llama.cpp
# at run time through purego, which links the binary against glibc's
# loader. A FROM scratch image then needs the loader, libc and libffi too:
# they are copied from this (Debian) machine, at the paths the binary names.
set -eu
bin=$1 dir=$2
mkdir -p "$dir"
cp "$bin" "$dir/gantry"
# libffi is not in ldd's list: the ffi package that yzma calls through
# dlopens it in an init function, and panics when it is missing, before
# any command runs.
ffi=$(ldconfig -p | awk '/libffi\.so\.8 .*x86-64/ { print $NF; exit }')
[ -n "$ffi" ] || { echo "image-context.sh: libffi.so.8 not found (apt-get install libffi8)" >&2; exit 1; }
{ ldd "$bin"; echo "	$ffi"; } | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
	[ -f "$lib" ] || continue
	mkdir -p "$dir$(dirname "$lib")"
	cp -L "$lib" "$dir$lib"
done
