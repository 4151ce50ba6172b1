#!/usr/bin/env bash
# The test command (README; .ci/run calls it after installing packages).
# Tests run in the release profile: they read whole brains, and the release
# artifacts are shared with the binary setup.sh builds.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace --release
echo "== fuzz targets still compile"
cargo check --release --manifest-path fuzz/Cargo.toml --bins
echo "== all tests passed"
