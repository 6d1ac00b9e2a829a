#!/usr/bin/env bash
# Runs the whole test suite, green on a fresh Debian machine with a Rust
# toolchain. Installs what the tests need when it is missing:
#   protobuf-compiler, libprotobuf-dev  (protoc and its well-known types,
#                      for etcd-client's build)
#   etcd-server        (the integration tests start real etcd servers)
#   postgresql         (initdb and pg_ctl, for real PostgreSQL servers)
#   openssl            (throwaway CAs and certificates for the etcd TLS tests)
# Installing uses apt-get, as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi

if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "scripts/test.sh: please install these Debian packages first: ${missing[*]}" >&2
    exit 2
  fi
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  # Packaged services must not start in the background: the tests start
  # their own servers on free ports.
  made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if $made_policy; then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
fi

exec cargo test --workspace --locked "$@"
