#!/usr/bin/env bash
# Fetches the headers the `cuda` build compiles its attention shim against (never committed):
#   * cuDNN 9.19.0.56 backend headers (PyPI wheel nvidia-cudnn-cu13, the version the device's
#     torch venv ships; libcudnn.so.9 itself is loaded at run time from LD_LIBRARY_PATH),
#   * cudnn-frontend 1.32.0 C++ headers (PyPI wheel nvidia-cudnn-frontend; header-only, used with
#     NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING so nothing links against cuDNN at build time).
# Both wheels are checked against pinned sha256 sums, and only their include/ folders are kept.
# Usage: scripts/fetch-cudnn.sh [DEST]   (default $HOME/.cache/coretech-cudnn)
# Then:  export CORETECH_CUDNN_INCLUDE=DEST/include   (build.rs reads it under --features cuda)
set -euo pipefail
DEST=${1:-$HOME/.cache/coretech-cudnn}
PIP=${PIP:-python3 -m pip}
FE_WHL=nvidia_cudnn_frontend-1.32.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
FE_SHA=c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0
BE_WHL=nvidia_cudnn_cu13-9.19.0.56-py3-none-manylinux_2_27_x86_64.whl
BE_SHA=d20e1734305e9d68889a96e3f35094d733ff1f83932ebe462753973e53a572bf
mkdir -p "$DEST/wheels" "$DEST/include"
get() { # name==version, file, sha256
  if [ ! -f "$DEST/wheels/$2" ]; then
    $PIP download -q --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d "$DEST/wheels" "$1"
  fi
  echo "$3  $DEST/wheels/$2" | sha256sum -c --quiet - || { echo "sha256 mismatch for $2" >&2; exit 1; }
}
get nvidia-cudnn-frontend==1.32.0 "$FE_WHL" "$FE_SHA"
get nvidia-cudnn-cu13==9.19.0.56 "$BE_WHL" "$BE_SHA"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
unzip -q -o "$DEST/wheels/$FE_WHL" 'include/*' -d "$T/fe"
unzip -q -o "$DEST/wheels/$BE_WHL" 'nvidia/cudnn/include/*' -d "$T/be"
cp -r "$T/fe/include/." "$DEST/include/"
cp -r "$T/be/nvidia/cudnn/include/." "$DEST/include/"
test -f "$DEST/include/cudnn_frontend.h" && test -f "$DEST/include/cudnn_graph.h"
echo "export CORETECH_CUDNN_INCLUDE=$DEST/include"
