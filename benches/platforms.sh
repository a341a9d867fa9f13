#!/usr/bin/env bash
# What adding arm64 to an amd64 build costs: the sample release built cold (empty cache each
# run) for linux/amd64 alone, and for linux/amd64,linux/arm64 with the ERTS transplant, side by
# side (benches/sidebyside.py: each round runs both in a shuffled order; medians, and the median
# of the rounds' own ratios); then the same to a tarball with the bases already summarised, and
# pushed to a registry that holds the bases. The target is at most 1.5x.
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
cargo build --release --quiet
B=$PWD/target/release/imgbuild
W=${BENCH_DIR:-$PWD/target/bench-platforms}
mkdir -p "$W"
export SOURCE_DATE_EPOCH=1700000000
SIDE=(python3 benches/sidebyside.py --runs "$RUNS" --target 1.5)
ONE="$B build -q $REL --from $BASE --platform linux/amd64 -t b/hello:1 -o $W/one.tar"
TWO="$B build -q $REL --from $BASE --platform linux/amd64,linux/arm64 --otp-from $OTP -t b/hello:1 -o $W/two.tar"
export IMGBUILD_CACHE=$W/cache
echo "cold (an empty cache each run: both bases read, every layer written):"
"${SIDE[@]}" --json "$W/platforms.json" --prepare "rm -rf $W/cache $W/one.tar $W/two.tar" \
  "amd64=$ONE" "amd64+arm64=$TWO"
# The CI case: the bases already summarised in the cache (they change rarely), the release's
# layers new (their records dropped, so every release layer is tarred and compressed again),
# no tarball from an earlier run (replacing one costs dropping its pages, ~0.35 ms a MB here).
echo "to a tarball, bases summarised, release layers new:"
"${SIDE[@]}" --json "$W/platforms-warm.json" --prepare "rm -rf $W/cache/layers $W/cache/inputs $W/one.tar $W/two.tar" \
  "amd64=$ONE" "amd64+arm64=$TWO"
# The CI case with a push: the bases in a local registry (docker-registry) and summarised in the
# cache, the images pushed to another repository of it. The bases' layers are mounted, never
# fetched, so what platforms cost is their own layers and manifests.
command -v docker-registry >/dev/null || { echo "platforms.sh: docker-registry is missing (apt-get install docker-registry)" >&2; exit 2; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
rm -rf "$W/registry"; mkdir -p "$W/registry"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
  "$W/registry/data" "$REG" > "$W/registry/config.yml"
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 & RPID=$!
trap 'kill $RPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
$B copy -q "$BASE" "$REG/base/multi:1" >/dev/null
RBASE=$REG/base/multi:1
rm -rf "$W/cache"
$B build -q "$REL" --from "$RBASE" --platform linux/amd64,linux/arm64 --otp-from "$OTP" -o "$W/summaries.tar"
rm -rf "$W/cache/blobs" "$W/summaries.tar"   # the summaries stay; no base layer is local
echo "pushed, bases summarised and in the registry, release layers new:"
"${SIDE[@]}" --json "$W/platforms-push.json" --prepare "rm -rf $W/cache/layers $W/cache/inputs" \
  "amd64=$B build -q $REL --from $RBASE --platform linux/amd64 -t $REG/app/one:1 --push" \
  "amd64+arm64=$B build -q $REL --from $RBASE --platform linux/amd64,linux/arm64 --otp-from $OTP -t $REG/app/two:1 --push"
