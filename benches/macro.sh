#!/usr/bin/env bash
# Macro benchmark: the same image built side by side by imgbuild, by `docker build` + `docker push`
# and by `buildah bud` + `buildah push`, on a generated release of about 60 MB and 1,400 files
# over a Debian bookworm minbase base held in a local registry. Runs alternate between the tools
# (these machines are noisy) and the script prints medians and ratios.
#
#   bash benches/macro.sh [RUNS]          (default 5 runs per case; needs root for dockerd)
#   IMGBUILD_BEFORE=/path/to/old/imgbuild bash benches/macro.sh [RUNS]
#                                         (also times an earlier binary in the same runs, for
#                                          a before/after figure against the same peers)
#
# Cases: cold (empty caches) build+push; cold for the release with the base summarised; a fleet
# runner (empty cache, warm --cache-repo); rebuild+push with nothing changed; rebuild+push after a
# one-module change; build to a tarball. Also the floor: `tar | pigz -6 | sha256sum` over the
# release. Needs the Debian packages docker.io, buildah, docker-registry, skopeo, umoci,
# debootstrap, elixir, erlang-dev, pigz (scripts/test installs most of them).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
W=${BENCH_DIR:-$ROOT/target/bench-macro}
mkdir -p "$W"
export SOURCE_DATE_EPOCH=1700000000

for tool in docker dockerd buildah docker-registry skopeo umoci debootstrap mix pigz python3; do
  command -v "$tool" >/dev/null || { echo "macro.sh: $tool is missing (apt-get install it)" >&2; exit 2; }
done

cargo build --release --quiet
IMGBUILD=${CARGO_TARGET_DIR:-$ROOT/target}/release/imgbuild
BEFORE=${IMGBUILD_BEFORE:-}

# ---- servers: a registry and a Docker Engine of our own, stopped on exit ----
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
rm -rf "$W/registry"; mkdir -p "$W/registry"
cat > "$W/registry/config.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: $REG}
EOF
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 & PIDS+=($!)
D=/tmp/imgbuild-bench-docker
mkdir -p $D
dockerd --iptables=false --ip-forward=false --bridge=none --host unix://$D/docker.sock \
  --data-root $D/data --exec-root $D/exec --pidfile $D/dockerd.pid >"$W/dockerd.log" 2>&1 & PIDS+=($!)
export DOCKER_HOST=unix://$D/docker.sock
for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
# vfs: no dependence on overlay support in the sandbox (slower for buildah; see README).
BUILDAH=(buildah --root "$W/buildah/root" --runroot "$W/buildah/run" --storage-driver vfs)

# ---- the base: a bookworm minbase root filesystem in the registry ----
ROOTFS=$ROOT/target/tmp/e2e/bookworm-minbase.tar
if [ ! -f "$ROOTFS" ]; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  rm -rf "$W/rootfs"; debootstrap --variant=minbase bookworm "$W/rootfs" "$MIRROR" >/dev/null
  rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/* "$W"/rootfs/var/log/*
  mkdir -p "$(dirname "$ROOTFS")"
  tar --numeric-owner --sort=name -C "$W/rootfs" -cf "$ROOTFS" . && rm -rf "$W/rootfs"
fi
rm -rf "$W/base"
umoci init --layout "$W/base"; umoci new --image "$W/base:bookworm"
umoci raw add-layer --image "$W/base:bookworm" "$ROOTFS"
umoci config --image "$W/base:bookworm" --os linux --architecture amd64 \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BASE=$REG/base/debian:bookworm
skopeo copy --quiet --dest-tls-verify=false "oci:$W/base:bookworm" "docker://$BASE"

# ---- the release: the sample app plus generated OTP applications and static assets ----
REL=$W/rel/hello
if [ ! -f "$W/rel/.done" ]; then
  rm -rf "$W/app" "$W/rel"; cp -r "$ROOT/testdata/hello" "$W/app"
  (cd "$W/app" && MIX_ENV=prod mix release --quiet --overwrite >/dev/null)
  mkdir -p "$W/rel" && cp -a "$W/app/_build/prod/rel/hello" "$REL"
  python3 - "$REL" <<'EOF'
import os, random, sys
rel = sys.argv[1]
rnd = random.Random(42)
words = [b"defmodule", b"def", b"end", b"do", b"Enum.map", b"GenServer", b"handle_call",
         b"Phoenix", b"Ecto.Query", b"socket", b"assigns", b"render", b"conn", b"%{}"]
def beam(n):  # compresses about as well as BEAM chunks do (3-4x)
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + bytes([rnd.randrange(256)]) + b" "
    return bytes(out[:n])
for a in range(26):
    ebin = os.path.join(rel, "lib", f"dep{a:02d}-1.{a}.0", "ebin")
    os.makedirs(ebin)
    for m in range(22):
        open(os.path.join(ebin, f"Elixir.Dep{a:02d}.Mod{m:02d}.beam"), "wb").write(beam(rnd.randrange(20000, 110000)))
    open(os.path.join(ebin, f"dep{a:02d}.app"), "wb").write(b"{application,dep%02d,[]}.\n" % a)
static = os.path.join(rel, "lib", "hello-0.1.0", "priv", "static", "assets")
os.makedirs(static)
for i in range(40):  # images and fonts: already compressed
    open(os.path.join(static, f"img{i:02d}.png"), "wb").write(rnd.randbytes(rnd.randrange(50000, 250000)))
for i in range(20):
    open(os.path.join(static, f"app{i:02d}.js"), "wb").write(beam(rnd.randrange(30000, 200000)))
EOF
  touch "$W/rel/.done"
fi
echo "release: $(du -sm "$REL" | cut -f1) MB, $(find "$REL" | wc -l) files" >&2

cat > "$W/rel/Dockerfile" <<EOF
FROM $BASE
WORKDIR /app
ENV LANG=C.UTF-8 MIX_ENV=prod RELEASE_TMP=/tmp
COPY --chown=nobody:root hello ./
USER nobody
EXPOSE 4000
CMD ["/app/bin/server"]
EOF

# The one-module change: a different byte in one of the app's own modules.
touch_module() { printf '%s' "$1" >> "$REL/lib/hello-0.1.0/ebin/Elixir.Hello.beam"; }

now() { date +%s.%N; }
declare -A T
record() { T[$1]+="$2 "; }
timed() {
  local k=$1; shift; local s e
  s=$(now)
  "$@" >"$W/last.log" 2>&1 || { echo "FAILED ($k): $*" >&2; cat "$W/last.log" >&2; exit 1; }
  e=$(now); record "$k" "$(awk "BEGIN{print $e - $s}")"
}

ib() { IMGBUILD_CACHE=$W/ib-cache "$IMGBUILD" build "$REL" --from "$BASE" --quiet "$@"; }
dk() { docker build --network=host -q -t "$REG/$1" "$W/rel" && docker push -q "$REG/$1"; }
ibb() { IMGBUILD_CACHE=$W/ibb-cache "$BEFORE" build "$REL" --from "$BASE" --quiet "$@"; }
bh() { "${BUILDAH[@]}" bud --tls-verify=false --layers -q -t "$REG/$1" "$W/rel" && "${BUILDAH[@]}" push -q --tls-verify=false "$REG/$1"; }

# A runner that has seen the base once (its summary in the cache).
rm -rf "$W/ib-warm"
IMGBUILD_CACHE="$W/ib-warm" "$IMGBUILD" check "$REL" --from "$BASE" --quiet

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  # Cold: nothing cached anywhere; a repository the registry has not seen.
  rm -rf "$W/ib-cache"; timed ib-cold ib -t "$REG/ib-$run:cold" --push
  if [ -n "$BEFORE" ]; then rm -rf "$W/ibb-cache"; timed before-cold ibb -t "$REG/ibb-$run:cold" --push; fi
  docker image prune -af >/dev/null; docker builder prune -af >/dev/null
  timed docker-cold dk "dk-$run:cold"
  "${BUILDAH[@]}" rmi -af >/dev/null 2>&1 || true
  timed buildah-cold bh "bh-$run:cold"
  # Cold for the release, the base summarised (as after one `imgbuild check` or an earlier
  # build on this runner): the release's layers are new, the base is neither read nor fetched.
  rm -rf "$W/ib-warm/layers" "$W/ib-warm/inputs"
  timed ib-summary env IMGBUILD_CACHE="$W/ib-warm" "$IMGBUILD" build "$REL" --from "$BASE" --quiet -t "$REG/ibs-$run:summary" --push
  # Fleet: a runner with an empty local cache and a warm cache repository (another runner, not
  # timed, built this release before), nothing changed in the release.
  rm -rf "$W/ib-fleet" "$W/ib-seed"
  IMGBUILD_CACHE="$W/ib-seed" "$IMGBUILD" build "$REL" --from "$BASE" --quiet -t "$REG/seed:$run" --push --cache-repo "$REG/cache/hello"
  timed ib-fleet env IMGBUILD_CACHE="$W/ib-fleet" "$IMGBUILD" build "$REL" --from "$BASE" --quiet -t "$REG/ibf-$run:fleet" --push --cache-repo "$REG/cache/hello"
  # Nothing changed, same repository.
  timed ib-same ib -t "$REG/ib-$run:cold" --push
  if [ -n "$BEFORE" ]; then timed before-same ibb -t "$REG/ibb-$run:cold" --push; fi
  timed docker-same dk "dk-$run:cold"
  timed buildah-same bh "bh-$run:cold"
  # One module changed.
  touch_module "$run"
  timed ib-module ib -t "$REG/ib-$run:cold" --push
  if [ -n "$BEFORE" ]; then timed before-module ibb -t "$REG/ibb-$run:cold" --push; fi
  timed docker-module dk "dk-$run:cold"
  timed buildah-module bh "bh-$run:cold"
  # Build to a tarball (warm caches).
  touch_module "t$run"
  timed ib-tar ib -t "app:$run" -o "$W/ib.tar"
  if [ -n "$BEFORE" ]; then timed before-tar ibb -t "app:$run" -o "$W/ibb.tar"; fi
  timed docker-tar sh -c "docker build --network=host -q -t app:$run '$W/rel' && docker save -o '$W/dk.tar' app:$run"
  timed buildah-tar sh -c "${BUILDAH[*]} bud --tls-verify=false --layers -q -t app:$run '$W/rel' && ${BUILDAH[*]} push -q app:$run 'oci-archive:$W/bh.tar'"
  # The floor for a cold gzip build on this machine.
  timed floor sh -c "tar -C '$REL' -cf - . | pigz -6 | sha256sum"
done

python3 - "$RUNS" <<EOF
import statistics
t = {$(for k in "${!T[@]}"; do printf '"%s": [%s],' "$k" "$(echo "${T[$k]}" | sed 's/ $//; s/ /, /g')"; done)}
m = {k: statistics.median(v) for k, v in t.items()}
print(f"medians of {$RUNS} runs (seconds); ratio = peer / imgbuild")
for case in ["cold", "same", "module", "tar"]:
    ib = m[f"ib-{case}"]
    print(f"{case:7} imgbuild {ib:6.2f}   docker {m[f'docker-{case}']:6.2f} ({m[f'docker-{case}']/ib:5.1f}x)   buildah {m[f'buildah-{case}']:6.2f} ({m[f'buildah-{case}']/ib:5.1f}x)")
dc = m["docker-cold"]
for case, what in [("summary", "cold, base summarised, release layers new"), ("fleet", "fleet: empty cache, warm cache repo")]:
    print(f"{case:7} imgbuild {m[f'ib-{case}']:6.2f}   docker cold {dc:6.2f} ({dc/m[f'ib-{case}']:5.1f}x)   ({what})")
for case in ["cold", "same", "module", "tar"]:
    if f"before-{case}" in m:
        print(f"{case:7} before {m[f'before-{case}']:6.2f}   after {m[f'ib-{case}']:6.2f}   after/before {m[f'ib-{case}']/m[f'before-{case}']:5.2f}")
print(f"floor   tar|pigz -6|sha256sum {m['floor']:.2f}   imgbuild cold / floor = {m['ib-cold']/m['floor']:.2f}   summarised / floor = {m['ib-summary']/m['floor']:.2f}")
EOF
