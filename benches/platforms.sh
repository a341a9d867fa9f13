#!/usr/bin/env bash
# What adding arm64 to an amd64 build costs: the sample release built cold (empty cache each
# run) for linux/amd64 alone, and for linux/amd64,linux/arm64 with the ERTS transplant, side by
# side with hyperfine (alternating, medians). The target is at most 1.5x.
#
#   bash benches/platforms.sh [RUNS]      (default 5)
#
# Uses what the end-to-end tests leave in target/tmp/e2e (run them once first): the sample
# release, the amd64+arm64 minbase index layout and the arm64 OTP layout.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
E=$PWD/target/tmp/e2e
REL=$E/hello-v1/_build/prod/rel/hello
BASE=oci:$E/multi-base/layout:multi
OTP=oci:$E/otp-arm64-good/layout:otp
for p in "$REL" "$E/multi-base/layout" "$E/otp-arm64-good/layout"; do
  [ -e "$p" ] || { echo "platforms.sh: $p is missing: run the e2e tests first (cargo test --test e2e -- platforms::)" >&2; exit 2; }
done
command -v hyperfine >/dev/null || { echo "platforms.sh: hyperfine is missing (apt-get install hyperfine)" >&2; exit 2; }
cargo build --release --quiet
B=$PWD/target/release/imgbuild
W=${BENCH_DIR:-$PWD/target/bench-platforms}
mkdir -p "$W"
export SOURCE_DATE_EPOCH=1700000000
# Cold: an empty cache each run (both bases read, every layer written).
hyperfine --runs "$RUNS" --export-json "$W/platforms.json" \
  --prepare "rm -rf $W/cache" \
  -n amd64 "IMGBUILD_CACHE=$W/cache $B build -q $REL --from $BASE --platform linux/amd64 -t b/hello:1 -o $W/one.tar" \
  -n amd64+arm64 "IMGBUILD_CACHE=$W/cache $B build -q $REL --from $BASE --platform linux/amd64,linux/arm64 --otp-from $OTP -t b/hello:1 -o $W/two.tar"
# The CI case: the bases already summarised in the cache (they change rarely), the release's
# layers new (their records dropped, so every release layer is tarred and compressed again).
hyperfine --runs "$RUNS" --export-json "$W/platforms-warm.json" \
  --prepare "rm -rf $W/cache/layers $W/cache/inputs" \
  -n amd64 "IMGBUILD_CACHE=$W/cache $B build -q $REL --from $BASE --platform linux/amd64 -t b/hello:1 -o $W/one.tar" \
  -n amd64+arm64 "IMGBUILD_CACHE=$W/cache $B build -q $REL --from $BASE --platform linux/amd64,linux/arm64 --otp-from $OTP -t b/hello:1 -o $W/two.tar"
python3 - "$W/platforms.json" "$W/platforms-warm.json" <<'PY'
import json, statistics, sys
for name, path in (("cold", sys.argv[1]), ("bases cached, release layers new", sys.argv[2])):
    r = {x["command"]: statistics.median(x["times"]) for x in json.load(open(path))["results"]}
    one, two = r["amd64"], r["amd64+arm64"]
    print(f"{name}: amd64 {one:.2f} s, amd64+arm64 {two:.2f} s: {two/one:.2f}x (target <= 1.5x)")
PY
