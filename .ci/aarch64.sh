#!/usr/bin/env bash
# The aarch64 build (Graviton, Apple silicon, Grace next to a GH200): the whole workspace
# type-checks for aarch64-unknown-linux-gnu, and the tests of the engine, the model and the
# trainer (every kernel, the float64 golden vectors, finite differences, thread-count
# independence) run on the NEON path under qemu-user, linked by Debian's cross gcc.
# Skipped with a warning when the target or the tools cannot be installed. `.ci/aarch64.sh
# install` only installs them (`.ci/run` does that while the x86-64 tests build).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  if ! rustup target add "$TARGET" >/dev/null 2>&1; then
    echo "WARNING: could not add the $TARGET target; the aarch64 check is skipped" >&2
    exit 0
  fi
fi
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
  PKGS="g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
  if ! { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
      && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
          && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PKGS >/dev/null 2>&1; }; }; }; then
    echo "WARNING: could not install $PKGS; the aarch64 check is skipped" >&2
    exit 0
  fi
fi
[ "${1:-}" = install ] && exit 0
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo check --workspace --all-targets --locked --target "$TARGET"
# Four learning tests (hundreds to thousands of steps, one to two minutes each under qemu) test
# no code path the others do not.
cargo test --locked --target "$TARGET" -p stagewise-engine -p stagewise-models -p stagewise-train \
  -- --skip loss_falls_below_the_zero_predictor --skip discrete_tasks_use_dmmse_and_differ_from_ridge \
  --skip tasks_are_learned_in_order_of_frequency --skip induction_appears_when_text_repeats
