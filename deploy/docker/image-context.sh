#!/bin/sh
# image-context.sh BINARY DIR [LLAMA_DIR]: lay out the worker image's files
# in DIR: the gantry binary and the C libraries the dynamic loader needs to
# start it; with LLAMA_DIR, also llama.cpp's libraries from it in
# DIR/llama and the C libraries they need (the LLM worker images, make
# llm-image and make llm-gpu-image).
#
# gantry is built with CGO_ENABLED=0, but the GGUF runtime loads llama.cpp
# at run time through purego, which links the binary against glibc's
# loader. A FROM scratch image then needs the loader, libc and libffi too:
# they are copied from this (Debian) machine, at the paths the binary names.
# llama.cpp's libraries add libstdc++, libgcc_s and libm, and the CUDA
# build the CUDA runtime (libcudart.so.13, libcublas.so.13 and
# libcublasLt.so.13), which must resolve here: install the CUDA 13 runtime
# or put its lib64 on LD_LIBRARY_PATH. libcuda.so.1 is the one library
# left out: it is the NVIDIA driver's, which must match the node's kernel
# module, and the NVIDIA container runtime mounts the node's own.
set -eu
bin=$1 dir=$2 llama=${3:-}
mkdir -p "$dir"
cp "$bin" "$dir/gantry"
# libffi is not in ldd's list: the ffi package that yzma calls through
# dlopens it in an init function, and panics when it is missing, before
# any command runs.
ffi=$(ldconfig -p | awk '/libffi\.so\.8 .*x86-64/ { print $NF; exit }')
[ -n "$ffi" ] || { echo "image-context.sh: libffi.so.8 not found (apt-get install libffi8)" >&2; exit 1; }
deps="$(ldd "$bin")
	$ffi"
if [ -n "$llama" ]; then
	[ -e "$llama/libllama.so" ] || { echo "image-context.sh: no libllama.so in $llama (make llama-libs fetches the CPU build)" >&2; exit 1; }
	mkdir -p "$dir/llama"
	# -P keeps libllama.so and libggml.so the links to the versioned files
	# that they are.
	cp -P "$llama"/*.so "$dir/llama/"
	missing=""
	for so in "$llama"/*.so; do
		out=$(ldd "$so") || { echo "image-context.sh: ldd $so failed" >&2; exit 1; }
		deps="$deps
$out"
		missing="$missing $(echo "$out" | awk '/not found/ && $1 != "libcuda.so.1" { print $1 }')"
	done
	missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
	if [ -n "${missing% }" ]; then
		echo "image-context.sh: llama.cpp's libraries in $llama need ${missing}which this machine lacks: for the CUDA build, install the CUDA 13 runtime (libcudart, libcublas) or put its lib64 on LD_LIBRARY_PATH" >&2
		exit 1
	fi
fi
# The libraries by the paths ldd resolved them to, less llama.cpp's own
# (copied above; they find each other through their $ORIGIN runpath).
echo "$deps" | awk '/=>/ { print $3 } /^[[:space:]]*\// { print $1 }' | sort -u | while read -r lib; do
	[ -f "$lib" ] || continue
	case "$lib" in "$(realpath "${llama:-/nonexistent}")"/*) continue ;; esac
	mkdir -p "$dir$(dirname "$lib")"
	cp -L "$lib" "$dir$lib"
done
