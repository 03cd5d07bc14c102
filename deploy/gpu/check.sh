#!/usr/bin/env bash
# deploy/gpu/check.sh: checks Gantry's GGUF runtime on a machine with an
# NVIDIA GPU. It fetches the CUDA build of the llama.cpp libraries that
# Gantry pins (npm @node-llama-cpp/linux-x64-cuda@3.21.1, the CUDA
# counterpart of the CPU build in bin/llama; it needs the CUDA 13 runtime,
# libcudart.so.13 and libcublas.so.13, on the machine or in the image),
# loads a model with every layer offloaded, generates, and reports tokens/s
# next to the CPU build on the same machine.
#
#   deploy/gpu/check.sh [model.gguf]     # default: stories260K from the tests
#
# Run it from the repository root; it needs go, npm, nvidia-smi and the
# network to the npm registry (or GANTRY_LLAMA_CUDA_DIR holding the
# libraries already). It exits non-zero when the CUDA build finds no GPU,
# so that a node that would silently run LLMs on its CPU is caught.
#
# Serving GGUF models on GPU_* workload types then takes one of:
#   - the docker task driver (and gantry's docker driver): the LLM GPU
#     image, built on any machine where the CUDA 13 runtime's libraries
#     resolve (no GPU needed to build):
#         make llm-gpu-image        # or LD_LIBRARY_PATH=/usr/local/cuda-13/lib64 make llm-gpu-image
#     which fetches the CUDA build with
#         npm pack @node-llama-cpp/linux-x64-cuda@3.21.1
#     into bin/llama-cuda (make llama-cuda-libs; its libraries are named
#     libggml.cuda.v*.so and libllama.cuda.v*.so, linked as libggml.so and
#     libllama.so), and lays out FROM scratch the gantry binary, the CUDA
#     build in /llama, libstdc++ and the CUDA runtime (libcudart.so.13,
#     libcublas.so.13, libcublasLt.so.13) with
#     deploy/docker/image-context.sh. It tags gantry-worker-llm-gpu:dev;
#     push it where the clients pull from and name it with the scheduler's
#     --llm-gpu-image. libcuda.so.1 is not in it: the NVIDIA container
#     runtime mounts the node's driver. The jobs ask for device
#     "nvidia/gpu" and run the worker with --llm-gpu-layers -1.
#   - exec or raw_exec: this script's $GANTRY_LLAMA_CUDA_DIR (or
#     bin/llama-cuda) copied to the clients, named by the scheduler's
#     --llama-cuda-lib-dir, with the CUDA 13 runtime on the clients.
# A worker given GPU layers whose build finds no GPU (the CPU build, or the
# CUDA build without the CUDA runtime) fails its deployment saying so.
set -euo pipefail

MODEL=$(realpath "${1:-worker/llm/testdata/stories/model.gguf}")
CUDA_PKG=@node-llama-cpp/linux-x64-cuda@3.21.1
CUDA_DIR=$(realpath -m "${GANTRY_LLAMA_CUDA_DIR:-bin/llama-cuda}")

echo "== GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || {
	echo "nvidia-smi found no GPU: run this on a GPU node" >&2
	exit 1
}

if [ ! -e "$CUDA_DIR/libllama.so" ]; then
	echo "== fetching $CUDA_PKG into $CUDA_DIR"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && npm pack --silent "$CUDA_PKG" >/dev/null && tar xzf ./*.tgz)
	mkdir -p "$CUDA_DIR"
	cp "$tmp"/package/bins/*/*.so* "$CUDA_DIR"/
	# The CUDA build's files are libggml.cuda.v0.4.0.so and
	# libllama.cuda.v0.4.0.so (the CPU build's libggml.v0.4.0.so).
	(cd "$CUDA_DIR" && ln -sf "$(ls libggml.*v*.so | head -1)" libggml.so && ln -sf "$(ls libllama.*v*.so | head -1)" libllama.so)
fi
missing=$(ldd "$CUDA_DIR"/libggml-cuda*.so 2>/dev/null | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
if [ -n "$missing" ]; then
	echo "the CUDA build needs libraries this machine lacks: $missing(install the CUDA 13 runtime, or use an image with it)" >&2
	exit 1
fi

make --no-print-directory llama-libs >/dev/null

bench() { # $1: library dir, $2: GPU layers
	GANTRY_LLAMA_LIB_DIR=$1 GANTRY_LLM_MODEL=$MODEL GANTRY_LLM_GPU_LAYERS=$2 \
		go test ./worker/llm -run '^$' -bench '^BenchmarkGenerate$' -benchtime 5x -v 2>&1 |
		grep -E 'devices:|tokens/s|FAIL|Error|no GPU'
}

echo "== CPU build (bin/llama), no layers offloaded"
bench "$(realpath bin/llama)" 0
echo "== CUDA build ($CUDA_DIR), every layer offloaded"
bench "$CUDA_DIR" -1
