#!/usr/bin/env bash
# The image's build steps, kept out of the Dockerfile so that CI runs them without Docker
# (tests/deploy/entrypoint_test.sh stages the already-built binaries with `stage`).
#
#   deploy/docker/build.sh build BUILD_DIR cuda|cpu   configure and build the server and CLI
#                                                     (Release, no tests; CUDA for sm_90a)
#   deploy/docker/build.sh stage BUILD_DIR PREFIX     lay out PREFIX as the runtime image has it:
#       bin/   hgrn2-server, hgrn2-cli, libhgrn2_sentencepiece.so (stripped), hgrn2-entrypoint
#       lib/   the shared libraries they need beyond what the runtime base image has (found with
#              ldd: Abseil, gRPC, protobuf, sentencepiece, Oniguruma, utf8proc, prometheus-cpp,
#              cpp-httplib, OpenSSL, c-ares, re2, zlib, ...; not libc, libm, libstdc++, libgcc_s,
#              the loader, or the CUDA driver and libraries, which the nvidia/cuda runtime image
#              and the NVIDIA container toolkit provide)
#       models/hgrn2-demo   the bundled model
# Run from the repository root. JOBS sets the build's parallelism (default: every core).
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() {
  echo "usage: deploy/docker/build.sh build BUILD_DIR cuda|cpu | stage BUILD_DIR PREFIX" >&2
  exit 2
}

build() {
  local dir=$1 backend=$2 cuda
  case $backend in
    cuda) cuda=(-DHGRN2_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a) ;;
    cpu) cuda=(-DHGRN2_CUDA=OFF) ;;
    *) usage ;;
  esac
  # Release without -Werror: a newer compiler's new warning must not fail an image build (CI
  # builds with warnings as errors).
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DHGRN2_BUILD_TESTS=OFF \
    -DHGRN2_WERROR=OFF "${cuda[@]}"
  cmake --build "$dir" --target hgrn2-server hgrn2-cli hgrn2_sentencepiece -j "${JOBS:-$(nproc)}"
}

stage() {
  local dir=$1 prefix=$2 b lib
  local bins=(hgrn2-server hgrn2-cli libhgrn2_sentencepiece.so)
  rm -rf "$prefix"
  mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/models"
  for b in "${bins[@]}"; do
    [[ -e $dir/bin/$b ]] || { echo "build.sh: missing $dir/bin/$b (build first)" >&2; exit 1; }
    strip -o "$prefix/bin/$b" "$dir/bin/$b"
  done
  install -m 0755 deploy/docker/entrypoint.sh "$prefix/bin/hgrn2-entrypoint"
  cp -r models/hgrn2-demo "$prefix/models/"
  for b in "${bins[@]}"; do
    ldd "$dir/bin/$b" | awk '/=> \//{print $3}'
  done | sort -u | while read -r lib; do
    case $(basename "$lib") in
      libc.so* | libm.so* | libstdc++.so* | libgcc_s.so* | ld-linux* | libpthread.so* | libdl.so* | \
        librt.so* | libcuda.so* | libcudart.so* | libcublas*.so* | libnvidia*.so*) ;;
      *) cp -L "$lib" "$prefix/lib/" ;;
    esac
  done
  du -sh "$prefix"
}

(($# == 3)) || usage
case $1 in
  build) build "$2" "$3" ;;
  stage) stage "$2" "$3" ;;
  *) usage ;;
esac
