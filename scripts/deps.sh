#!/usr/bin/env bash
# Makes sure what edge's build and tests need is installed.
#   scripts/deps.sh build    cmake (pingora's zlib-ng), rustfmt, clippy
#   scripts/deps.sh test     the above, and the servers (and the browser) the tests start
#   scripts/deps.sh bench    the above, and the peers benchmarks compare with
#   scripts/deps.sh pgo      what a profile-guided build needs (benches/pgo/build.sh):
#                            the training run's load tools, llvm-profdata of rustc's LLVM
# As root, missing Debian packages are installed with apt-get; otherwise the
# script says what to install and exits 1.
set -euo pipefail

want=${1:-build}
missing_pkgs=()

need_cmd() { # command package
  command -v "$1" >/dev/null 2>&1 || missing_pkgs+=("$2")
}

need_cmd cmake cmake
need_cmd cc gcc
need_cmd make make
if [[ $want == test || $want == bench ]]; then
  need_cmd redis-server redis-server
  # A socket's unsent bytes as the kernel counts them (tcp_notsent_lowat's test).
  need_cmd ss iproute2
  need_cmd dig bind9-dnsutils
  need_cmd nsd nsd
  need_cmd python3 python3
  # The Helm chart's test renders it with Go's text/template (Debian has no helm).
  need_cmd go golang-go
  # The dashboard's browser test: headless Chromium through chromedriver.
  need_cmd chromium chromium
  need_cmd chromedriver chromium-driver
  # tls.acme's test: Let's Encrypt's ACME test server.
  need_cmd pebble pebble
fi
if [[ $want == pgo ]]; then
  # The training run's load (benches/pgo/train.sh).
  need_cmd wrk wrk
  need_cmd h2load nghttp2-client
  need_cmd dnsperf dnsperf
  need_cmd curl curl
  need_cmd openssl openssl
  need_cmd python3 python3
  # llvm-profdata of the LLVM rustc is built on (a raw profile's format
  # follows LLVM's version): $LLVM_PROFDATA, rustup's llvm-tools, or
  # Debian's llvm-<major> where Debian has that version, else llvm-tools.
  rustc=${RUSTC:-rustc}
  llvm_major=$("$rustc" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  if [[ -z ${LLVM_PROFDATA:-} ]] && ! ls "$("$rustc" --print sysroot)"/lib/rustlib/*/bin/llvm-profdata >/dev/null 2>&1 &&
    ! command -v "llvm-profdata-$llvm_major" >/dev/null 2>&1; then
    if [[ -n $llvm_major ]] && apt-cache show "llvm-$llvm_major" >/dev/null 2>&1; then
      missing_pkgs+=("llvm-$llvm_major")
    elif command -v rustup >/dev/null 2>&1; then
      rustup component add llvm-tools
    else
      echo "edge's profile-guided build needs llvm-profdata of LLVM ${llvm_major:-?} (rustup component add llvm-tools, or set LLVM_PROFDATA)" >&2
      exit 1
    fi
  fi
fi
if [[ $want == bench ]]; then
  need_cmd nginx nginx
  [[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing_pkgs+=(libnginx-mod-stream)
  need_cmd haproxy haproxy
  need_cmd varnishd varnish
  need_cmd wrk wrk
  need_cmd h2load nghttp2-client
  need_cmd dnsperf dnsperf
  need_cmd pdns_server pdns-server
  [[ -e /usr/lib/x86_64-linux-gnu/pdns/libgeoipbackend.so || -e /usr/lib/pdns/libgeoipbackend.so ]] || missing_pkgs+=(pdns-backend-geoip)
  need_cmd nsd nsd
  need_cmd taskset util-linux
fi

if ((${#missing_pkgs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
    # Packaged servers must not keep running as system services.
    for svc in redis-server nginx haproxy varnish pdns nsd; do
      systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
    done
  else
    echo "edge needs these Debian packages: ${missing_pkgs[*]}" >&2
    echo "install them with:  sudo apt-get install ${missing_pkgs[*]}" >&2
    exit 1
  fi
fi

# Python checkers the tests run, from PyPI, in a virtualenv under the target
# directory: the admin API's OpenAPI document (openapi-spec-validator) and
# the Kubernetes manifests and Helm chart (kubernetes-validate).
if [[ $want == test ]]; then
  pyenv="${CARGO_TARGET_DIR:-target}/pyenv"
  pins=(openapi-spec-validator==0.9.0 kubernetes-validate==1.37.0)
  if ! "$pyenv/bin/python" -c 'import openapi_spec_validator, kubernetes_validate' >/dev/null 2>&1; then
    if ! python3 -m venv "$pyenv" >/dev/null 2>&1; then
      if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$pyenv"
      else
        echo "edge's tests need python3 with venv (sudo apt-get install python3-venv)" >&2
        exit 1
      fi
    fi
    echo "installing into $pyenv: ${pins[*]}"
    "$pyenv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
  fi
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$component"
    else
      echo "edge needs the Rust component $component (rustup component add $component)" >&2
      exit 1
    fi
  fi
done
