#!/usr/bin/env bash
# Installs a portable llama-cpp-python into a venv, building it at most once per flag set.
#
# Why: a native build (GGML_NATIVE, upstream's default) compiles llama.cpp's AMX matmul path on
# AMX hardware (recent Intel Xeons), which segfaults on the first decode. pip's wheel cache does
# not key on CMAKE_ARGS, so a cached native wheel would silently win; we therefore build with
# --no-cache-dir into a project-local wheelhouse keyed by a hash of version + flags + Python + arch
# and reinstall from there afterwards, without rebuilding.
#
# usage: scripts/llama_wheel.sh VENV_BIN VERSION
# LLAMA_CMAKE_ARGS overrides the flags (its value is part of the key); WHEELHOUSE its folder.
set -euo pipefail
bin=$1
version=$2
arch=$(uname -m)
if [ -n "${LLAMA_CMAKE_ARGS+set}" ]; then
  args=$LLAMA_CMAKE_ARGS
else
  case $arch in
    x86_64 | amd64) args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
    *) args="" ;; # ARM and others: upstream defaults (no AMX there)
  esac
fi
pytag=$("$bin/python" -c 'import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())')
key=$(printf '%s|%s|%s|%s' "$version" "$args" "$pytag" "$arch" | sha256sum | cut -c1-16)
house=${WHEELHOUSE:-.wheelhouse}
dir=$house/llama-cpp-python-$version-$key
wheel=$(ls "$dir"/llama_cpp_python-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $version once (CMAKE_ARGS='$args'; about 5 minutes on 2 cores) into $dir"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  CMAKE_ARGS="$args" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$bin/pip" wheel --quiet --no-cache-dir --no-binary llama-cpp-python --no-deps \
    -w "$dir.tmp" "llama-cpp-python==$version"
  printf 'version=%s\nCMAKE_ARGS=%s\npython=%s\narch=%s\n' "$version" "$args" "$pytag" "$arch" >"$dir.tmp/FLAGS"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  wheel=$(ls "$dir"/llama_cpp_python-*.whl | head -n1)
else
  echo "llama-cpp-python $version: reusing $wheel (CMAKE_ARGS='$args')"
fi
# --force-reinstall: replace a native build that an earlier set-up may have installed.
"$bin/pip" install --quiet --force-reinstall --no-deps "$wheel"
"$bin/pip" install --quiet "$wheel[server]"
