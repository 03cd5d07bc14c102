# Gantry: `make run` starts everything on 127.0.0.1:8080; `make test` runs
# every test; `make bench` measures against baselines in the same run.
GO      ?= go
PYTHON  ?= /usr/bin/python3
BIN     := bin/gantry
LISTEN  ?= 127.0.0.1:8080
DATA    ?= .gantry
# Debian packages the benchmarks compare against.
BENCH_DEBS := python3-xgboost python3-sklearn nginx-light
# The worker image that `gantry dev --driver docker` runs.
IMAGE   ?= gantry-worker:dev
# The worker image for models that need Python (--python-image), and the
# Debian packages it holds.
PYTHON_IMAGE    ?= gantry-worker-python:dev
PYTHON_PACKAGES ?= python3-numpy python3-pandas python3-sklearn
# The worker images for GGUF models (--llm-image, --llm-gpu-image): the
# worker with llama.cpp's CPU build, or its CUDA build and the CUDA 13
# runtime, and the C++ runtime they need.
LLM_IMAGE     ?= gantry-worker-llm:dev
LLM_GPU_IMAGE ?= gantry-worker-llm-gpu:dev

.PHONY: all build run test test-deps llama-libs bench-llm test-short soak bench bench-pyfunc bench-go bench-python bench-proxy bench-coldstart bench-memory bench-pipeline bench-publish bench-hostile bench-external bench-gateway bench-deps fixtures fuzz clean image python-image llm-image llm-gpu-image llama-cuda-libs bench-docker console console-deps

all: build

build: console
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/gantry

# The worker image, FROM scratch: no registry is reachable. The build
# context is the binary and the glibc files its loader needs.
image:
	@rm -rf bin/image-context && mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/image/gantry ./cmd/gantry
	deploy/docker/image-context.sh bin/image/gantry bin/image-context
	DOCKER_BUILDKIT=0 docker build -q -f deploy/docker/Dockerfile -t $(IMAGE) bin/image-context

# The worker with Debian's python3 and PYTHON_PACKAGES, for models that the
# Python runtime serves: the scratch image cannot hold an interpreter. The
# root filesystem comes from Debian packages (mmdebstrap, no registry).
python-image:
	@mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/image/gantry ./cmd/gantry
	deploy/docker/python-image.sh $(PYTHON_IMAGE) bin/image/gantry $(PYTHON_PACKAGES)

# The worker with llama.cpp's CPU libraries in /llama and libstdc++, for
# GGUF models on CPU workload types; FROM scratch, from local files only.
llm-image: llama-libs
	@rm -rf bin/llm-image-context && mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/image/gantry ./cmd/gantry
	deploy/docker/image-context.sh bin/image/gantry bin/llm-image-context $(LLAMA_DIR)
	DOCKER_BUILDKIT=0 docker build -q -f deploy/docker/Dockerfile.llm -t $(LLM_IMAGE) bin/llm-image-context

# The same with llama.cpp's CUDA build, for GGUF models on GPU workload
# types. The CUDA 13 runtime (libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13) must resolve on this machine: install it, or put its
# lib64 on LD_LIBRARY_PATH (make llm-gpu-image LD_LIBRARY_PATH=...). It
# needs no GPU to build; the image needs one, the NVIDIA driver and the
# NVIDIA container runtime to run (deploy/gpu/check.sh checks a node).
llm-gpu-image: llama-cuda-libs
	@rm -rf bin/llm-gpu-image-context && mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/image/gantry ./cmd/gantry
	deploy/docker/image-context.sh bin/image/gantry bin/llm-gpu-image-context $(LLAMA_CUDA_DIR)
	DOCKER_BUILDKIT=0 docker build -q -f deploy/docker/Dockerfile.llm -t $(LLM_GPU_IMAGE) bin/llm-gpu-image-context

run: build test-deps llama-libs
	./$(BIN) dev --listen $(LISTEN) --data-dir $(DATA)

# The race detector is on for everything; the end-to-end test builds the
# binary and runs real worker processes. test/clients is a module of its
# own: the official SDKs against gantry dev, without them in go.mod; it
# runs uncached (-count=1), as Go's test cache cannot see the gantry
# binary it builds from the rest of the tree.
test: test-deps console-deps console llama-libs
	$(GO) vet ./...
	cd api && $(GO) vet ./... && $(GO) test -race ./...
	$(GO) test -race -timeout 15m ./...
	cd test/clients && $(GO) vet ./... && $(GO) test -count=1 ./...

test-short:
	$(GO) test -short ./...

# Every component a process of its own, 32 clients on three endpoints for
# 10 minutes, with faults in turn (kill -9 an activator and the scheduler,
# SIGSTOP the Nomad API, restart ClickHouse and the broker). make test runs
# a one-minute version with 8 clients.
SOAK_DURATION ?= 10m
SOAK_CLIENTS  ?= 32
soak: test-deps
	GANTRY_SOAK_DURATION=$(SOAK_DURATION) GANTRY_SOAK_CLIENTS=$(SOAK_CLIENTS) \
		$(GO) test -run '^TestSoak$$' -count 1 -timeout 30m -v ./cmd/gantry/

bench: bench-go bench-python bench-proxy bench-coldstart bench-docker bench-memory bench-pipeline bench-pyfunc bench-publish

bench-go:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench 'Predict|Parse|Activator|Reserve|Record|Window' -benchmem -count 5 \
		./worker/xgboost/ ./worker/scoring/ ./activator/... ./autoscaler/... | tee bin/bench-go.txt

# python3-xgboost predicting the rows BenchmarkPredict predicts; compare
# the two with: benchstat -ignore cpu bin/bench-go.txt bin/bench-python.txt
bench-python: bench-deps
	$(PYTHON) deploy/bench/xgb_python.py --name Predict --count 5 | tee bin/bench-python.txt

bench-proxy: bench-deps build
	deploy/bench/proxy.sh

# A scikit-learn model through gantry worker's Python runtime, batching on
# and off, against FastAPI + uvicorn and a plain predict loop; cold start
# next to native XGBoost. Numbers and the command: README, Models.
PYFUNC_BENCH_DEBS := python3-sklearn python3-pandas python3-fastapi python3-uvicorn
bench-pyfunc: build
	@dpkg -s $(PYFUNC_BENCH_DEBS) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PYFUNC_BENCH_DEBS))
	@mkdir -p bin
	PYTHON=$(PYTHON) deploy/bench/pyfunc.sh | tee bin/bench-pyfunc.txt

# Zero to first response with the local driver (20 trials), and a burst of
# 1,000 concurrent requests at zero: p50/p99 and how many succeeded. The
# docker cold start is bench-docker's (it needs dockerd).
bench-coldstart:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '^Benchmark(ColdStart|ColdBurst)$$' -benchtime 1x ./cmd/gantry/ | tee bin/bench-coldstart.txt

# Zero to first response with the docker driver next to the local driver,
# 10 trials each, against a dockerd that the script starts when none answers.
bench-docker:
	@mkdir -p bin
	deploy/docker/start-dockerd.sh
	GANTRY_BENCH_TRIALS=10 $(GO) test -run '^$$' -bench '^BenchmarkColdStart(Docker)?$$' -benchtime 1x ./cmd/gantry/ | tee bin/bench-docker.txt

# Inference tables: capture → broker → logger → ClickHouse, rows/s and the
# p50/p99 time from capture to the row being visible in SQL.
bench-pipeline: test-deps
	@mkdir -p bin
	$(GO) test -run '^$$' -bench Pipeline -benchtime 1x ./loggers/sink/ | tee bin/bench-pipeline.txt

# Feature tables: publishing 1,000,000 keys from ClickHouse to redis-server,
# SNAPSHOT and TRIGGERED, in rows/s (GANTRY_PUBLISH_ROWS changes the size).
bench-publish: test-deps
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '^BenchmarkPublish$$' -benchtime 1x -count 3 ./features/publish/ | tee bin/bench-publish.txt

# Activator memory with 10,000 held requests of 1 KiB.
bench-memory:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench HeldRequests -benchtime 1x ./activator/ | tee bin/bench-memory.txt

# gantry dev's RSS idle, under 1,000 clients trickling 16 MiB bodies and
# under 20 clients claiming 1 GiB bodies (goal: under 100 MB above idle).
bench-hostile:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '^BenchmarkHostileRSS$$' -benchtime 1x ./cmd/gantry/ | tee bin/bench-hostile.txt

# External models: the same chat request straight to the provider double
# and through the activator, same client, same run: p50/p99 at 64
# connections (ns/op is the throughput's inverse) and a stream's time to
# its first event; then the open loop (BenchmarkExternalOpenLoop): both
# paths' capacity, and the latency added at fixed rates (5 to 75 % of the
# direct capacity), interleaved over rounds (GANTRY_BENCH_ROUNDS).
bench-external:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '^BenchmarkExternalOverhead$$' -benchtime 2s ./activator/ | grep -v ' INFO ' | tee bin/bench-external.txt
	$(GO) test -run '^$$' -bench '^BenchmarkExternalOpenLoop$$' -benchtime 1x ./activator/ | grep -v ' INFO \| WARN ' | tee -a bin/bench-external.txt

# What an AI gateway config costs a chat call: no config, 5 rate limits
# plus every guardrail decided in the activator, and the same decided by
# the scheduler's coordinator over loopback HTTP, same run; and the
# coordinator round trip alone (reserve).
bench-gateway:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '^BenchmarkGatewayOverhead$$' -benchtime 2000x -count 5 ./activator/ | grep -v ' INFO \| WARN ' | tee bin/bench-gateway.txt

# The web console: a TypeScript app in console/web built by Vite into
# console/dist, which is committed and embedded in the binary, so that
# `go build` needs no npm. It is rebuilt only when its sources change: the
# bundle records the SHA-256 of the sources it was built from
# (console/dist/.sources; TestBundleIsFresh checks it), which holds in a
# fresh clone where file times say nothing.
CONSOLE_SRC = console/web/index.html console/web/package.json console/web/package-lock.json \
	console/web/tsconfig.json console/web/vite.config.ts $(shell find console/web/src -type f | LC_ALL=C sort)
console:
	@sum=$$(cat $(CONSOLE_SRC) | sha256sum | cut -c1-64); \
	if [ "$$sum" != "$$(cat console/dist/.sources 2>/dev/null)" ]; then \
		echo "console: sources changed, rebuilding console/dist"; \
		$(MAKE) --no-print-directory console/web/node_modules/.package-lock.json && \
		(cd console/web && npm run build) && echo $$sum > console/dist/.sources; \
	fi

# npm (the console's packages, llama.cpp's libraries) from Debian when the
# machine has none.
NEED_NPM = @command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)

console/web/node_modules/.package-lock.json: console/web/package-lock.json
	$(NEED_NPM)
	cd console/web && npm ci --no-audit --no-fund

# What the console's browser test needs: the npm packages (playwright-core
# drives the browser) and Debian's chromium (no browser download works).
console-deps: console/web/node_modules/.package-lock.json
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# What the tests need from Debian, installed when missing: ClickHouse holds
# the inference tables (the tests start their own servers); scipy is the
# reference the drift statistics are checked against; sklearn, torch, pandas
# and cloudpickle are what the Python model host serves in the tests.
TEST_DEBS := clickhouse-server redis-server python3-scipy python3-sklearn python3-torch python3-pandas python3-cloudpickle
test-deps:
	@dpkg -s $(TEST_DEBS) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEBS))

# llama.cpp for the GGUF runtime (worker/llm): the prebuilt CPU libraries
# of npm's @node-llama-cpp/linux-x64, the build pinned with yzma v1.26.1 in
# go.mod (newer yzma looks up symbols these lack). The worker loads them at
# run time, with no cgo, from bin/llama (beside bin/gantry) or
# --llama-lib-dir; they need Debian's libffi8. Fetched with npm pack, from
# the registry, once.
LLAMA_NPM := @node-llama-cpp/linux-x64@3.21.1
LLAMA_DIR := bin/llama
llama-libs: $(LLAMA_DIR)/libllama.so
$(LLAMA_DIR)/libllama.so:
	@dpkg -s libffi8 >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libffi8)
	$(NEED_NPM)
	rm -rf $(LLAMA_DIR).tmp && mkdir -p $(LLAMA_DIR).tmp $(LLAMA_DIR)
	cd $(LLAMA_DIR).tmp && npm pack --silent $(LLAMA_NPM) >/dev/null && tar xzf *.tgz
	cp $(LLAMA_DIR).tmp/package/bins/linux-x64/*.so $(LLAMA_DIR)/
	cd $(LLAMA_DIR) && ln -sf $$(ls libggml.v*.so) libggml.so && ln -sf $$(ls libllama.v*.so) libllama.so
	rm -rf $(LLAMA_DIR).tmp

# llama.cpp's CUDA 13 build, the CUDA counterpart of llama-libs (143 MB
# packed, libggml-cuda.so alone 159 MB), for the GPU image and for workers
# on GPU nodes (--llama-lib-dir). Its files are named libggml.cuda.v*.so
# and libllama.cuda.v*.so.
LLAMA_CUDA_NPM := @node-llama-cpp/linux-x64-cuda@3.21.1
LLAMA_CUDA_DIR := bin/llama-cuda
llama-cuda-libs: $(LLAMA_CUDA_DIR)/libllama.so
$(LLAMA_CUDA_DIR)/libllama.so:
	$(NEED_NPM)
	rm -rf $(LLAMA_CUDA_DIR).tmp && mkdir -p $(LLAMA_CUDA_DIR).tmp $(LLAMA_CUDA_DIR)
	cd $(LLAMA_CUDA_DIR).tmp && npm pack --silent $(LLAMA_CUDA_NPM) >/dev/null && tar xzf *.tgz
	cp $(LLAMA_CUDA_DIR).tmp/package/bins/linux-x64-cuda/*.so $(LLAMA_CUDA_DIR)/
	cd $(LLAMA_CUDA_DIR) && ln -sf $$(ls libggml.*v*.so) libggml.so && ln -sf $$(ls libllama.*v*.so) libllama.so
	rm -rf $(LLAMA_CUDA_DIR).tmp

# A GGUF model's streams (stories260K, 1 and 8 at once) through the
# activator, straight to its worker and in process, interleaved in one
# run: tokens/s and time to first token, medians and ratios.
bench-llm: llama-libs
	@mkdir -p bin
	$(GO) test -run '^$$' -bench '^BenchmarkLLMOverhead$$' -benchtime 1x ./cmd/gantry/ | grep -v ' INFO ' | tee bin/bench-llm.txt

bench-deps:
	@mkdir -p bin
	@dpkg -s $(BENCH_DEBS) >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS))

# Regenerates worker/testdata/models with Debian's python3-xgboost, and the
# py_* models of the Python runtime with python3-sklearn and python3-torch.
fixtures: bench-deps test-deps
	$(PYTHON) deploy/fixtures/make_models.py
	$(PYTHON) deploy/fixtures/make_pyfunc_models.py

# A minute of each fuzz target; new crashers land in testdata/fuzz as seeds.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseJSON -fuzztime 60s ./worker/scoring/
	$(GO) test -run '^$$' -fuzz FuzzParseCSV -fuzztime 60s ./worker/scoring/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 60s -fuzzminimizetime 5s ./worker/xgboost/

clean:
	rm -rf bin
