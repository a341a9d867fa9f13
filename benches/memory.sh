#!/usr/bin/env bash
# Peak memory of imgbuild on a large release: a generated 1 GiB release (the bench release of
# benches/macro.sh plus 1 GiB of generated application files, half compressible, half not)
# built cold to a tarball and pushed to a local registry. Prints peak RSS (GNU time's %M).
#
#   bash benches/memory.sh [SIZE_MB]      (default 1024; run benches/macro.sh once first)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_MB=${1:-1024}
W=${BENCH_DIR:-$ROOT/target/bench-macro}
[ -f "$W/rel/.done" ] && [ -d "$W/base" ] || { echo "memory.sh: run benches/macro.sh first (it makes the release and base)" >&2; exit 2; }
cargo build --release --quiet
IMGBUILD=$ROOT/target/release/imgbuild

BIG=$W/big/hello
if [ ! -f "$W/big/.done-$SIZE_MB" ]; then
  rm -rf "$W/big"; mkdir -p "$W/big"; cp -a "$W/rel/hello" "$BIG"
  python3 - "$BIG" "$SIZE_MB" <<'EOF'
import os, random, sys
rel, size_mb = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
text = b"".join(rnd.choice([b"defmodule ", b"def ", b"end\n", b"GenServer.call", b"%{}", b"socket "]) for _ in range(200000))
written, i = 0, 0
while written < size_mb << 20:
    d = os.path.join(rel, "lib", f"big{i // 64:03d}-1.0.0", "priv")
    os.makedirs(d, exist_ok=True)
    n = 4 << 20
    data = rnd.randbytes(n) if i % 2 else (text * (n // len(text) + 1))[:n]
    open(os.path.join(d, f"blob{i:04d}.bin"), "wb").write(data)
    written += n; i += 1
EOF
  touch "$W/big/.done-$SIZE_MB"
fi
echo "release: $(du -sm "$BIG" | cut -f1) MB, $(find "$BIG" | wc -l) files" >&2

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
rm -rf "$W/mem-registry"; mkdir -p "$W/mem-registry"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' \
  "$W/mem-registry/data" "$REG" > "$W/mem-registry/config.yml"
docker-registry serve "$W/mem-registry/config.yml" >/dev/null 2>&1 & REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$W/base:bookworm" "docker://$REG/base/debian:bookworm"

export IMGBUILD_CACHE=$W/mem-cache
rm -rf "$IMGBUILD_CACHE"
/usr/bin/time -f "cold build to tarball: %e s, peak RSS %M KB" \
  "$IMGBUILD" build "$BIG" --from "$REG/base/debian:bookworm" -t big:1 -o "$W/big.tar" --quiet
/usr/bin/time -f "push of the built image: %e s, peak RSS %M KB" \
  "$IMGBUILD" build "$BIG" --from "$REG/base/debian:bookworm" -t "$REG/big/app:1" --push --quiet
/usr/bin/time -f "push of the saved tarball to a new repository: %e s, peak RSS %M KB" \
  "$IMGBUILD" push "$W/big.tar" "$REG/big/other:1" --quiet
rm -f "$W/big.tar"
