#!/bin/sh
# Runs one libFuzzer target for a bounded time (ctest label "fuzz").
#   run_fuzzer.sh BINARY SEED_DIR WORK_DIR DEFAULT_SECONDS [DICT]
# $KV_FUZZ_SECONDS overrides DEFAULT_SECONDS (the build's KV_FUZZ_SECONDS), so
# `KV_FUZZ_SECONDS=3600 ctest --test-dir build-fuzz -L fuzz -R fuzz_config`
# runs one target for an hour. New inputs go to WORK_DIR (in the build tree,
# never into the committed seeds); a crash leaves its input there too, as
# crash-<sha1>, and the test fails.
set -eu
bin=$1 seeds=$2 work=$3 seconds=${KV_FUZZ_SECONDS:-$4}
mkdir -p "$work/corpus"
set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" ${5:+-dict="$5"} "$work/corpus" "$seeds"
echo "$bin $*"
exec "$bin" "$@"
