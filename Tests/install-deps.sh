#!/usr/bin/env bash
# Installs what Keel's build and tests need on a fresh Debian machine, only when missing.
# Idempotent: safe to run before every build or test run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
dpkg -s libnghttp2-dev >/dev/null 2>&1 || need_apt+=(libnghttp2-dev)
dpkg -s liblmdb-dev    >/dev/null 2>&1 || need_apt+=(liblmdb-dev)
dpkg -s zlib1g-dev     >/dev/null 2>&1 || need_apt+=(zlib1g-dev)
dpkg -s libjemalloc-dev >/dev/null 2>&1 || need_apt+=(libjemalloc-dev)
dpkg -s protobuf-compiler >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
dpkg -s nghttp2-client >/dev/null 2>&1 || need_apt+=(nghttp2-client)
dpkg -s pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-deps: apt-get install ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python grpcio + grpcio-tools (interop tests in Tests/GRPCTests/python), from PyPI when missing.
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import grpc, grpc_tools" >/dev/null 2>&1; then
    echo "install-deps: pip install grpcio grpcio-tools"
    python3 -m pip install -q --disable-pip-version-check grpcio grpcio-tools >/dev/null 2>&1 \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages grpcio grpcio-tools >/dev/null
fi

# python-etcd3 (PyPI `etcd3`): the second independent client for end-to-end tests. Its generated
# _pb2 files predate protobuf 4, so tests run it with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python.
if command -v python3 >/dev/null 2>&1 && ! PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python python3 -c "import etcd3" >/dev/null 2>&1; then
    echo "install-deps: pip install etcd3"
    python3 -m pip install -q --disable-pip-version-check etcd3 >/dev/null 2>&1 \
        || python3 -m pip install -q --disable-pip-version-check --break-system-packages etcd3 >/dev/null
fi

# Debian's etcd 3.4 (etcd-server, etcd-client) as the reference server and an independent grpc-go
# client (etcdctl). Downloaded and unpacked into .cache/etcd, never installed: installing
# etcd-server would start a system etcd on 127.0.0.1:2379. Tests find the binaries at
# .cache/etcd/usr/bin/{etcd,etcdctl} (or $KEEL_ETCD_BIN_DIR).
ETCD_CACHE=".cache/etcd"
if [ ! -x "$ETCD_CACHE/usr/bin/etcd" ] || [ ! -x "$ETCD_CACHE/usr/bin/etcdctl" ]; then
    echo "install-deps: apt-get download etcd-server etcd-client -> $ETCD_CACHE"
    mkdir -p "$ETCD_CACHE/debs"
    ( cd "$ETCD_CACHE/debs" && { apt-get download etcd-server etcd-client >/dev/null 2>&1 \
        || { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; $SUDO apt-get update -qq && apt-get download etcd-server etcd-client >/dev/null; }; } )
    for deb in "$ETCD_CACHE"/debs/*.deb; do dpkg -x "$deb" "$ETCD_CACHE"; done
fi
