#!/bin/sh
# Regenerates the seed corpora in fuzz/seeds/<target>/ (tiny valid inputs for each target).
set -eu
cd "$(dirname "$0")"
rm -rf seeds
cargo run --quiet --example gen_seeds -- seeds
du -sh seeds/*
