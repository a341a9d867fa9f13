#!/usr/bin/env bash
# Issue 25's figures, in one run: the same release as an image three ways, with compressed size,
# package count and build time.
#
#   deb      imgbuild --from deb:bookworm --package auto   (Debian packages only, no shell; the
#            release started by imgbuild's launcher)
#   debian   imgbuild --from oci:<bookworm-slim-like layout> --package auto   (today's default path)
#   docker   docker build of a Dockerfile shaped like Phoenix 1.7's phx.gen.release runner stage
#            (apt-get install libstdc++6 openssl libncurses5 locales ca-certificates, locale-gen,
#            WORKDIR /app, chown nobody, COPY --chown=nobody:root, USER nobody, CMD bin/server)
#            on the same bookworm-slim-like base, `docker import`ed (no registry is reachable)
#
#   bash benches/shellless.sh [RUNS]        (default 3; needs root for dockerd and debootstrap)
#   IMGBUILD=/path/to/imgbuild bash benches/shellless.sh 3   (no cargo build)
#   SHELLLESS_RELEASE_MB=0 bash benches/shellless.sh   (the sample release as mix makes it,
#                                            13 MB; default 20: padded to about 20 MB, the
#                                            issue's Phoenix case)
#
# The base: `debootstrap --variant=minbase bookworm` (the e2e tests' tarball when present), made
# slim the way Docker's official debian:*-slim images are (dpkg path-excludes for docs, man pages,
# info and translations, and those files removed), with the machine's apt sources
# (/etc/apt/sources.list.d/debian.sources) as its own, so `apt-get` in `docker build` reaches the
# archive over the host network. The release: testdata/hello with HELLO_WITH_CRYPTO=1 (its boot
# loads :crypto, so it needs libssl3), padded with generated OTP applications and static assets.
#
# Sizes: the sum of the manifest's layer sizes. For docker, as pushed to a local docker-registry
# (Docker compresses on push); for imgbuild, from the OCI tarball it writes (the bytes it would
# push). Packages: docker: dpkg-query -W inside the image (status "installed"); imgbuild: the
# pkg:deb purls of the image's SBOM (the deb: lock's [[package]] count is checked against it).
#
# Times (medians of RUNS, each case alternated): imgbuild to a tarball, in three states:
#   first  empty cache (IMGBUILD_CACHE, else $XDG_CACHE_HOME/imgbuild) and no imgbuild.lock:
#          resolves from the archive, downloads and verifies every .deb
#   cold   empty cache, imgbuild.lock kept (a CI runner with the lock committed)
#   warm   the same build again (cache and lock kept)
# and `docker build --no-cache` of the runner stage (the base image kept), for context.
# Cold builds download from the Debian archive: the network's noise is in them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-3}
TGT=${CARGO_TARGET_DIR:-$ROOT/target}
W=${BENCH_DIR:-$TGT/bench-shellless}
SIZE_MB=${SHELLLESS_RELEASE_MB:-20}
mkdir -p "$W"
export SOURCE_DATE_EPOCH=1700000000

for tool in docker dockerd docker-registry debootstrap umoci mix python3 curl jq; do
  command -v "$tool" >/dev/null || { echo "shellless.sh: $tool is missing (apt-get install it)" >&2; exit 2; }
done

# IMGBUILD=/path/to/imgbuild skips the build (build.rs watches the shared .git's refs/heads, so
# another worktree's commit makes cargo build imgbuild again).
if [ -z "${IMGBUILD:-}" ]; then cargo build --release --quiet; IMGBUILD=$TGT/release/imgbuild; fi

# The archive and its security archive, from the machine's deb822 sources (as tests/e2e/debbase.rs).
SOURCES=/etc/apt/sources.list.d/debian.sources
MAIN=$(awk '/^URIs:/{print $2; exit}' "$SOURCES")
SEC=$(awk '/^URIs:/{u=$2} /^Suites:/ && /-security/{print u; exit}' "$SOURCES")
SEC=${SEC:-$MAIN-security}
DEBFLAGS=(--deb-mirror "$MAIN" --deb-security-mirror "$SEC")

# ---- servers: a registry and a Docker Engine of our own, stopped on exit ----
PIDS=()
D=/tmp/imgbuild-bench-shellless-$$
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for m in "$D"/exec/netns/*; do umount "$m" 2>/dev/null || true; done
  rm -rf "$D"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
rm -rf "$W/registry"; mkdir -p "$W/registry"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
  "$W/registry/data" "$REG" > "$W/registry/config.yml"
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 & PIDS+=($!)
mkdir -p "$D"
dockerd --iptables=false --ip-forward=false --bridge=none --host "unix://$D/docker.sock" \
  --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" >"$W/dockerd.log" 2>&1 & PIDS+=($!)
export DOCKER_HOST=unix://$D/docker.sock
for _ in $(seq 150); do docker info >/dev/null 2>&1 && curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.2; done
docker info >/dev/null

# ---- the base: bookworm minbase, made slim like debian:bookworm-slim ----
MINBASE=$TGT/tmp/e2e/bookworm-minbase.tar
if [ ! -f "$MINBASE" ]; then
  rm -rf "$W/rootfs"; debootstrap --variant=minbase bookworm "$W/rootfs" "$MAIN" >/dev/null
  rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/* "$W"/rootfs/var/log/*
  mkdir -p "$(dirname "$MINBASE")"
  tar --numeric-owner --sort=name -C "$W/rootfs" -cf "$MINBASE" . && rm -rf "$W/rootfs"
fi
SLIM=$W/slim.tar
if [ ! -f "$SLIM" ] || [ "$MINBASE" -nt "$SLIM" ]; then
  S=$W/slim; rm -rf "$S"; mkdir -p "$S"
  tar --numeric-owner -xpf "$MINBASE" -C "$S"
  cat > "$S/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# as Docker's official slim images: no documentation, man pages or translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  find "$S/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$S/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$S"/usr/share/{groff,info,linda,lintian,locale,man}/*
  rm -f "$S/etc/apt/sources.list"
  cp "$SOURCES" "$S/etc/apt/sources.list.d/debian.sources"
  tar --numeric-owner --sort=name --mtime=@$SOURCE_DATE_EPOCH -C "$S" -cf "$SLIM" .
  rm -rf "$S"
fi
ENVPATH=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
docker import --change "ENV $ENVPATH" --change 'CMD ["bash"]' "$SLIM" debian:bookworm-slim >/dev/null
rm -rf "$W/base"
umoci init --layout "$W/base"; umoci new --image "$W/base:bookworm"
umoci raw add-layer --image "$W/base:bookworm" "$SLIM"
umoci config --image "$W/base:bookworm" --os linux --architecture amd64 --config.env "$ENVPATH" \
  --config.cmd bash
DEBIAN_BASE=oci:$W/base:bookworm

# ---- the release ----
REL=$W/rel/hello
if [ ! -f "$W/rel/.done-$SIZE_MB" ]; then
  rm -rf "$W/app" "$W/rel"; cp -r "$ROOT/testdata/hello" "$W/app"; rm -rf "$W/app/_build"
  (cd "$W/app" && HELLO_WITH_CRYPTO=1 MIX_ENV=prod mix release --quiet --overwrite >/dev/null)
  mkdir -p "$W/rel" && cp -a "$W/app/_build/prod/rel/hello" "$REL"
  # Padding up to SIZE_MB: OTP applications of BEAM-like bytes (compress 3-4x, as BEAM chunks
  # do), static assets as Phoenix's priv/static holds (images: incompressible; JS: like code).
  python3 - "$REL" "$SIZE_MB" <<'EOF'
import os, random, sys
rel, target = sys.argv[1], int(sys.argv[2]) * 1_000_000
size = lambda: sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(rel) for f in fs)
rnd = random.Random(42)
words = [b"defmodule", b"def", b"end", b"do", b"Enum.map", b"GenServer", b"handle_call",
         b"Phoenix", b"Ecto.Query", b"socket", b"assigns", b"render", b"conn", b"%{}"]
def beam(n):
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + bytes([rnd.randrange(256)]) + b" "
    return bytes(out[:n])
have = size()
if target and have < target:
    static = os.path.join(rel, "lib", "hello-0.1.0", "priv", "static", "assets")
    os.makedirs(static)
    a = 0
    while have < target:
        if a % 4 == 3:  # a quarter of the padding: assets
            for i in range(3):
                p = os.path.join(static, f"img{a:02d}-{i}.png")
                open(p, "wb").write(rnd.randbytes(rnd.randrange(40000, 120000)))
                js = os.path.join(static, f"app{a:02d}-{i}.js")
                open(js, "wb").write(beam(rnd.randrange(20000, 80000)))
        else:
            ebin = os.path.join(rel, "lib", f"dep{a:02d}-1.{a}.0", "ebin")
            os.makedirs(ebin)
            for m in range(12):
                open(os.path.join(ebin, f"Elixir.Dep{a:02d}.Mod{m:02d}.beam"), "wb").write(beam(rnd.randrange(10000, 60000)))
            open(os.path.join(ebin, f"dep{a:02d}.app"), "wb").write(b"{application,dep%02d,[]}.\n" % a)
        a += 1
        have = size()
EOF
  touch "$W/rel/.done-$SIZE_MB"
fi
REL_MB=$(du -sm --apparent-size "$REL" | cut -f1); REL_FILES=$(find "$REL" -type f | wc -l)
echo "release: $REL_MB MB, $REL_FILES files" >&2

# The runner stage of phx.gen.release's Dockerfile, in its shape (the builder stage is replaced
# by the release made above).
cat > "$W/rel/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update -y \
 && apt-get install -y libstdc++6 openssl libncurses5 locales ca-certificates \
 && apt-get clean && rm -f /var/lib/apt/lists/*_*
RUN sed -i '/en_US.UTF-8/s/^# //g' /etc/locale.gen && locale-gen
ENV LANG=en_US.UTF-8 LANGUAGE=en_US:en LC_ALL=en_US.UTF-8
WORKDIR /app
RUN chown nobody /app
ENV MIX_ENV=prod
COPY --chown=nobody:root hello ./
USER nobody
CMD ["/app/bin/server"]
EOF
printf 'Dockerfile\n.done-*\n' > "$W/rel/.dockerignore"

now() { date +%s.%N; }
declare -A T
timed() {
  local k=$1; shift; local s e
  s=$(now)
  "$@" >"$W/last.log" 2>&1 || { echo "FAILED ($k): $*" >&2; cat "$W/last.log" >&2; exit 1; }
  e=$(now); T[$k]+="$(awk "BEGIN{print $e - $s}") "
}
# imgbuild in a project directory of its own (imgbuild.lock is written there), its own cache.
ib() {  # NAME FROM [FLAGS...]
  local name=$1 from=$2; shift 2
  (cd "$W/$name" && rm -f img.tar && IMGBUILD_CACHE=$W/$name/cache XDG_CACHE_HOME=$W/$name/xdg \
    "$IMGBUILD" build "$REL" --from "$from" --package auto "$@" -t "shellless/$name:1" -o img.tar)
}
ib_deb() { ib deb deb:bookworm "${DEBFLAGS[@]}"; }
ib_debian() { ib debian "$DEBIAN_BASE"; }
first() { rm -rf "$W/$1"; mkdir -p "$W/$1"; "ib_$1"; }
cold() { rm -rf "$W/$1/cache" "$W/$1/xdg"; "ib_$1"; }
dk() { docker build --no-cache --network=host -q -t runner:1 "$W/rel"; }

declare -A BYTES PKGS LAYERS
sizes() {  # the image tarball of NAME: sum of layer sizes; pkg:deb purls in its SBOM
  python3 - "$W/$1/img.tar" <<'EOF'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: json.load(t.extractfile("blobs/sha256/" + d.split(":")[1]))
m = blob(json.load(t.extractfile("index.json"))["manifests"][0]["digest"])
total = sum(l["size"] for l in m["layers"])
purls = set()
import gzip, io
for l in m["layers"]:
    layer = tarfile.open(fileobj=io.BytesIO(gzip.decompress(t.extractfile("blobs/sha256/" + l["digest"].split(":")[1]).read())))
    for e in layer.getmembers():
        if e.name.startswith(("var/lib/db/sbom/", "./var/lib/db/sbom/")) and e.name.endswith(".spdx.json"):
            doc = json.load(layer.extractfile(e))
            for p in doc.get("packages", []):
                for r in p.get("externalRefs", []):
                    if r.get("referenceLocator", "").startswith("pkg:deb/"):
                        purls.add(r["referenceLocator"])
print(total, len(purls), len(m["layers"]))
EOF
}
docker_sizes() {  # IMAGE: pushed layer bytes, installed packages
  docker tag "$1" "$REG/$1" && docker push -q "$REG/$1" >/dev/null
  local repo=${1%%:*} tag=${1##*:}
  local bytes pkgs layers
  bytes=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/$repo/manifests/$tag" | jq '[.layers[].size] | add')
  layers=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REG/v2/$repo/manifests/$tag" | jq '.layers | length')
  pkgs=$(docker run --rm --network=host --entrypoint dpkg-query "$1" -W -f '${db:Status-Status}\n' | grep -c '^installed$')
  echo "$bytes $pkgs $layers"
}

for run in $(seq "$RUNS"); do
  echo "run $run/$RUNS" >&2
  # Alternate which imgbuild case goes first.
  if [ $((run % 2)) = 1 ]; then order=(deb debian); else order=(debian deb); fi
  for n in "${order[@]}"; do timed "$n-first" first "$n"; done
  timed docker dk
  for n in "${order[@]}"; do timed "$n-cold" cold "$n"; done
  for n in "${order[@]}"; do timed "$n-warm" "ib_$n"; done
  for n in deb debian; do read -r b p l < <(sizes "$n"); BYTES[$n]+="$b "; PKGS[$n]+="$p "; LAYERS[$n]=$l; done
  read -r b p l < <(docker_sizes runner:1); BYTES[docker]+="$b "; PKGS[docker]+="$p "; LAYERS[docker]=$l
  docker rmi -f runner:1 "$REG/runner:1" >/dev/null
done
read -r b p l < <(docker_sizes debian:bookworm-slim); BYTES[slim]=$b; PKGS[slim]=$p; LAYERS[slim]=$l
LOCKED=$(grep -c '^\[\[package\]\]' "$W/deb/imgbuild.lock")
ADDED=$(awk '/^\[\[package\]\]/{getline; sub(/name = /,""); gsub(/"/,""); printf "%s%s", s, $0; s=" "}' "$W/debian/imgbuild.lock")

python3 - <<EOF
import statistics
med = lambda s: statistics.median(float(x) for x in s.split())
t = {$(for k in "${!T[@]}"; do printf '"%s": "%s",' "$k" "${T[$k]}"; done)}
b = {$(for k in "${!BYTES[@]}"; do printf '"%s": "%s",' "$k" "${BYTES[$k]}"; done)}
p = {$(for k in "${!PKGS[@]}"; do printf '"%s": "%s",' "$k" "${PKGS[$k]}"; done)}
l = {$(for k in "${!LAYERS[@]}"; do printf '"%s": %s,' "$k" "${LAYERS[$k]}"; done)}
m = {k: med(v) for k, v in t.items()}
B = {k: med(v) for k, v in b.items()}
P = {k: med(v) for k, v in p.items()}
mb = lambda x: f"{x/1e6:.1f} MB"
print(f"release: $REL_MB MB, $REL_FILES files; medians of $RUNS runs")
print(f"sizes per run (bytes): " + "; ".join(f"{k}: {v.strip()}" for k, v in sorted(b.items())))
print()
print(f"| image | compressed | layers | packages | vs docker runner |")
print(f"|---|---|---|---|---|")
rows = [("imgbuild --from deb:bookworm --package auto", "deb"),
        ("imgbuild --from bookworm-slim-like --package auto", "debian"),
        ("docker build, phx.gen.release runner stage", "docker"),
        ("(the bookworm-slim-like base alone)", "slim")]
for name, k in rows:
    print(f"| {name} | {mb(B[k])} ({int(B[k])} B) | {l[k]} | {int(P[k])} | {B[k]/B['docker']:.2f}x bytes, {P[k]/P['docker']:.2f}x packages |")
print()
print(f"deb: lock holds $LOCKED packages; --package auto added to the Debian base: $ADDED")
print()
print(f"| build (seconds) | deb:bookworm | bookworm-slim-like | deb / slim-like |")
print(f"|---|---|---|---|")
for case, what in [("first", "first: empty cache, no lock"), ("cold", "cold: empty cache, lock kept"), ("warm", "warm: again")]:
    print(f"| {what} | {m['deb-'+case]:.2f} | {m['debian-'+case]:.2f} | {m['deb-'+case]/m['debian-'+case]:.2f}x |")
print(f"| docker build --no-cache of the runner stage (base kept) | {m['docker']:.2f} | | docker / deb first: {m['docker']/m['deb-first']:.1f}x, / deb cold: {m['docker']/m['deb-cold']:.1f}x |")
print()
print("times per run: " + "; ".join(f"{k}: {v.strip()}" for k, v in sorted(t.items())))
EOF
