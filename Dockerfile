# syntax=docker/dockerfile:1
# The hgrn2-server image, in two targets built from the repository root:
#   docker build --target cpu  -t hgrn2-server:0.5.0-cpu .   # the CPU backend
#   docker build --target cuda -t hgrn2-server:0.5.0 .       # the CUDA backend, Hopper (sm_90a)
# Without a registry: scripts/build-image cpu|cuda (a debootstrap base and podman). Both build
# with the presets of CMakePresets.json (release, cuda-release) and run on Debian 12 slim as user
# 10001, serving the bundled demo model unless told otherwise. See deploy/README.md.

# The base of every stage; scripts/build-image passes the one it made with debootstrap.
ARG DEBIAN_IMAGE=docker.io/library/debian:12-slim
# NVIDIA's PyPI wheels of CUDA 13.0 (the toolkit the project builds with): nvcc and the headers for
# the build, the CUDA runtime and cuBLAS for the image. The driver (libcuda) comes from the host.
ARG CUDA_WHEELS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3"

# ---- build: the packages, then the sources -----------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY scripts/install-deps scripts/install-deps
# The build packages (scripts/install-deps --build-only) and ccache, whose cache outlives a build.
RUN scripts/install-deps --build-only \
 && apt-get install -y -qq --no-install-recommends ccache=4.* \
 && rm -rf /var/lib/apt/lists/*
ENV CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_CUDA_COMPILER_LAUNCHER=ccache CCACHE_DIR=/ccache

FROM build AS build-cuda
ARG CUDA_WHEELS
# The toolkit laid out from the wheels as /usr/local/cuda (bin/nvcc, include/, lib/, nvvm/), with
# the unversioned names of the libraries the build links (the wheels ship only libX.so.13).
# Behind a TLS-inspecting proxy, pass its CA bundle as the build secret `cacert` (not kept in the
# image): scripts/build-image passes the host's.
RUN --mount=type=secret,id=cacert \
    apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /tmp/wheels \
 && if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && /tmp/wheels/bin/pip install --quiet --disable-pip-version-check --no-cache-dir \
      --target /tmp/cuda ${CUDA_WHEELS} \
 && mv /tmp/cuda/nvidia/cu13 /usr/local/cuda \
 && ln -s lib /usr/local/cuda/lib64 \
 && for lib in cudart cublas cublasLt; do ln -s "lib$lib.so.13" "/usr/local/cuda/lib/lib$lib.so"; done \
 && rm -rf /tmp/wheels /tmp/cuda
ENV PATH=/usr/local/cuda/bin:$PATH
COPY . .
RUN --mount=type=cache,target=/ccache \
    cmake --preset cuda-release \
 && cmake --build --preset cuda-release -j "$(nproc)" \
 && scripts/stage-image build-cuda-release /opt/hgrn2 cuda

FROM build AS build-cpu
COPY . .
RUN --mount=type=cache,target=/ccache \
    cmake --preset release \
 && cmake --build --preset release -j "$(nproc)" \
 && scripts/stage-image build-release /opt/hgrn2 cpu

# ---- runtime: Debian slim, the staged /opt/hgrn2, a non-root user ------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG VERSION=0.5.0
ARG REVISION=unknown
# A numeric, non-root user, so that Kubernetes' runAsNonRoot can verify it; and the commit built,
# in a file (a RUN that uses REVISION also keeps podman's layer cache from reusing the LABEL below,
# and everything after it, for another commit).
RUN groupadd --gid 10001 hgrn2 \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hgrn2 \
 && echo "${REVISION}" >/etc/hgrn2-revision
LABEL org.opencontainers.image.title="hgrn2-server" \
      org.opencontainers.image.description="gRPC inference server for HGRN2 language models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.vendor="hgrn2-serve developers" \
      org.opencontainers.image.base.name="debian:12-slim"
# The model folder's default (--model) is models/hgrn2-demo under the working directory.
WORKDIR /opt/hgrn2
ENV PATH=/opt/hgrn2/bin:$PATH
# gRPC, /metrics, the OpenAI-compatible HTTP API (--http-port, 0 = off).
EXPOSE 50051 9400 8000
# Docker's own health check; Kubernetes uses its gRPC probes instead (deploy/k8s).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/opt/hgrn2/bin/hgrn2-cli", "--addr", "127.0.0.1:50051", "--timeout", "3", "health"]
# SIGTERM drains (up to --drain-timeout, default 30 s): give `docker stop` more than that.
STOPSIGNAL SIGTERM
# Flags come as arguments, HGRN2_* variables or a --config file (hgrn2-server --help); another
# program runs with --entrypoint (docker run --entrypoint hgrn2-cli IMAGE health).
ENTRYPOINT ["/opt/hgrn2/bin/hgrn2-server"]

FROM runtime AS cuda
COPY --from=build-cuda /opt/hgrn2 /opt/hgrn2
RUN echo /opt/hgrn2/lib >/etc/ld.so.conf.d/hgrn2.conf && ldconfig
# cuda, not auto: a pod without a GPU fails at start instead of serving slowly on the CPU.
ENV HGRN2_DEVICE=cuda NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.description="gRPC inference server for HGRN2 language models (CUDA 13, sm_90a)"
USER 10001:10001

FROM runtime AS cpu
COPY --from=build-cpu /opt/hgrn2 /opt/hgrn2
RUN echo /opt/hgrn2/lib >/etc/ld.so.conf.d/hgrn2.conf && ldconfig
ENV HGRN2_DEVICE=cpu
LABEL org.opencontainers.image.description="gRPC inference server for HGRN2 language models (CPU)"
USER 10001:10001
