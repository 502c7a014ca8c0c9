#!/usr/bin/env bash
# build.sh : a profile-guided release build of edge (`make release-pgo`).
#
#   1. builds edge with `-Cprofile-generate` (target dir $PGO_DIR/gen);
#   2. runs it under benches/pgo/train.sh's request mix (TRAIN_SECONDS per
#      kind, default 3), which writes raw profiles into $PGO_DIR/raw;
#   3. merges them with llvm-profdata of the LLVM rustc is built on into
#      $PGO_DIR/edge.profdata;
#   4. builds edge again with `-Cprofile-use` of it: $PGO_DIR/use/release/edge.
#
# PGO_DIR defaults to `pgo` under the target directory ($CARGO_TARGET_DIR,
# else target): target/pgo. A relative PGO_DIR or CARGO_TARGET_DIR is
# taken from where the script is run. Each build is a full release build
# (fat LTO, one code unit): about twice the time of `cargo build
# --release`. The binary behaves as the plain release build does; only the
# compiler's placement of code and its inlining and branch layout follow
# the profile (hot paths together, cold ones apart). What it changes per
# request is in benches/RESULTS.md ("A profile-guided build").
#
# llvm-profdata: $LLVM_PROFDATA if set, else rustup's llvm-tools component,
# else Debian's llvm-<major> (scripts/deps.sh pgo installs it as root); its
# major version must be rustc's LLVM's (a raw profile's format follows it).
set -euo pipefail
unset CDPATH
target=${CARGO_TARGET_DIR:-target}
PGO_DIR=${PGO_DIR:-$target/pgo}
mkdir -p "$PGO_DIR"
PGO_DIR=$(cd "$PGO_DIR" && pwd)
cd "$(dirname "$0")/../.."
# RUSTFLAGS is split on whitespace: the profile's paths must have none.
[[ $PGO_DIR != *[[:space:]]* ]] || { echo "build.sh: PGO_DIR has a space: $PGO_DIR" >&2; exit 1; }
# These would override RUSTFLAGS or send the profile elsewhere.
unset CARGO_ENCODED_RUSTFLAGS LLVM_PROFILE_FILE
RUSTC=${RUSTC:-rustc}
scripts/deps.sh pgo

major=$("$RUSTC" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[[ -n $major ]] || { echo "build.sh: $RUSTC -vV names no LLVM version" >&2; exit 1; }
profdata=${LLVM_PROFDATA:-}
if [[ -z $profdata ]]; then
  for tool in "$("$RUSTC" --print sysroot)"/lib/rustlib/*/bin/llvm-profdata; do
    [[ -x $tool ]] && profdata=$tool && break
  done
fi
profdata=${profdata:-llvm-profdata-$major}
command -v "$profdata" >/dev/null || { echo "build.sh: no $profdata (rustc's LLVM is $major)" >&2; exit 1; }
tool_major=$("$profdata" --version | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1)
[[ $tool_major == "$major" ]] ||
  { echo "build.sh: $profdata is LLVM ${tool_major:-?}, rustc's is $major: set LLVM_PROFDATA" >&2; exit 1; }

raw="$PGO_DIR/raw"
echo "build.sh: 1/4 instrumented build ($PGO_DIR/gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$raw" CARGO_TARGET_DIR="$PGO_DIR/gen" \
  cargo build --locked --release -p edge
# Build scripts and proc macros ran instrumented too, and earlier runs may
# have left profiles: only this training run's counts go in.
rm -rf "$raw"
mkdir -p "$raw"
echo "build.sh: 2/4 training run"
benches/pgo/train.sh "$PGO_DIR/gen/release/edge" "${TRAIN_SECONDS:-3}"
ls "$raw"/*.profraw >/dev/null 2>&1 || { echo "build.sh: the training run wrote no profile in $raw" >&2; exit 1; }
echo "build.sh: 3/4 merge ($profdata)"
"$profdata" merge -o "$PGO_DIR/edge.profdata" "$raw"
echo "build.sh: 4/4 build with the profile ($PGO_DIR/use)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$PGO_DIR/edge.profdata" CARGO_TARGET_DIR="$PGO_DIR/use" \
  cargo build --locked --release -p edge
echo "build.sh: $PGO_DIR/use/release/edge"
