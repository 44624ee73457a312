#!/usr/bin/env bash
# The arm64 smoke test: the device side on an emulated 64-bit Raspberry Pi, compared with the host.
#
#   sudo device/arm64_smoke.sh [--wheel dist/fer_edge-*.whl] [--keep] [--prepare]
#
# On this x86 host, under qemu-user (Cortex-A72), in a Debian bookworm arm64 root (Python 3.11, as on
# 64-bit Raspberry Pi OS Bookworm):
#   1. builds the wheel (python -m build) unless --wheel names one
#   2. builds the root once with mmdebstrap and caches it (FER_EDGE_ARM64_CACHE, default
#      /var/cache/fer-edge-arm64; the device extra's aarch64 wheels too), then unpacks a fresh copy
#   3. device/install.sh with no source must refuse; device/install.sh --wheel WHEEL --model M installs
#   4. golden crops (tests/golden_crops.py) reproduce on the board byte for byte
#   5. fer-edge doctor: no check fails, runtime/XNNPACK/model/detector ok
#   6. the service's command (fer-edge run --config /etc/fer-edge/config.yaml, as user fer-edge) on PNG
#      frames and on an MJPG face video; its JSON lines against the host's: PNG frames equal boxes and
#      labels, the video the same labels
# Exit 0 = passed, 1 = failed, 77 = skipped (no root, no binfmt_misc/qemu): the reason is printed.
# Emulated timings are 20-100x a real Pi's and mean nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${FER_EDGE_ARM64_CACHE:-/var/cache/fer-edge-arm64}"
SUITE=bookworm
INCLUDE="python3-venv,python3-pip,ca-certificates,passwd"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
WHEEL=""
KEEP=0
PREPARE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL="$(cd "$(dirname "${2:?--wheel needs a file}")" && pwd)/$(basename "$2")"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --prepare) PREPARE=1; shift ;;   # only the host tools and the cached root (no venv needed): CI starts it first
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "arm64_smoke.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
skip() { echo "arm64 smoke: SKIPPED: $*"; exit 77; }
fail() { echo "arm64 smoke: FAILED: $*" >&2; exit 1; }
step() { printf '==> [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }

# --- can this machine run it? ------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (mmdebstrap, chroot and mounts); run it with sudo"
[ "$(uname -s)" = Linux ] || skip "needs Linux (binfmt_misc, chroot)"
host_arch="$(uname -m)"
[ -f "$REPO/pyproject.toml" ] || fail "$REPO is not a fer-edge checkout"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ "$host_arch" != aarch64 ]; then
  [ -e /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
fi
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || skip "needs ${need[*]} and there is no apt-get to install them"
  step "apt: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; } \
    || skip "could not apt-get install ${need[*]}"
fi
if [ "$host_arch" != aarch64 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
      || skip "this kernel has no binfmt_misc (mount -t binfmt_misc failed): arm64 binaries cannot run here"
  fi
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || skip "binfmt_misc has no enabled qemu-aarch64 handler (update-binfmts --enable qemu-aarch64 failed)"
  # F (fix binary): the kernel opens qemu at registration, so it need not exist inside the root
  grep -qs 'flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || skip "the qemu-aarch64 binfmt handler lacks the F flag (qemu-user-static from Debian 12+ sets it)"
fi

# --- the arm64 root: built once by mmdebstrap, cached as a tarball -----------------------------------
cached_root() {
  key="$(printf '%s %s %s v1' "$SUITE" arm64 "$INCLUDE" | sha256sum | cut -c1-12)"
  TARBALL="$CACHE/$SUITE-arm64-$key.tar"
  mkdir -p "$CACHE/wheels"
  if [ ! -f "$TARBALL" ]; then
    step "mmdebstrap $SUITE arm64 (once; cached as $TARBALL)"
    # --skip=cleanup/apt/lists keeps the package lists, so install.sh's apt-get finds its packages
    mmdebstrap --quiet --arch=arm64 --variant=apt --include="$INCLUDE" --skip=cleanup/apt/lists \
      --format=tar "$SUITE" "$TARBALL.tmp" ${FER_EDGE_ARM64_MIRROR:+"$FER_EDGE_ARM64_MIRROR"} \
      || { rm -f "$TARBALL.tmp"; fail "mmdebstrap could not build the $SUITE arm64 root"; }
    mv "$TARBALL.tmp" "$TARBALL"
  fi
}

if [ "$PREPARE" -eq 1 ]; then
  cached_root
  step "root cached: $TARBALL"
  exit 0
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # the host runs this checkout's code
"$PY" -c "import fer_edge, skimage, build" 2>/dev/null \
  || fail "$PY lacks fer-edge with its test extra (skimage, build): run ./setup.sh or set PYTHON="

WORK="$(mktemp -d /var/tmp/fer-edge-arm64.XXXXXX)"
ROOT="$WORK/root"
MOUNTS=()
cleanup() {
  local i ok=1
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  for m in "${MOUNTS[@]}"; do mountpoint -q "$m" 2>/dev/null && ok=0; done
  if [ "$ok" -eq 0 ]; then
    echo "arm64 smoke: something is still mounted under $ROOT; left in place (unmount it, then rm -rf $WORK)" >&2
  elif [ "$KEEP" -eq 1 ]; then
    echo "arm64 smoke: kept $WORK"
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT
mnt() { mount "$@"; MOUNTS+=("${!#}"); }

# --- host side: wheel, inputs, the host's JSON lines ---------------------------------------------
if [ -z "$WHEEL" ]; then
  step "python -m build --wheel"
  "$PY" -m build --wheel --outdir "$WORK/dist" "$REPO" >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; fail "the wheel did not build"; }
  WHEEL="$(ls "$WORK"/dist/fer_edge-*.whl)"
fi
[ -f "$WHEEL" ] || fail "wheel $WHEEL not found"
MODEL="$REPO/benchmarks/models/fer2013_best_int8.tflite"
step "inputs: PNG frames and an MJPG face video (the astronaut); host runs"
"$PY" "$REPO/tests/arm64_smoke_data.py" make "$WORK/data"
host_run() {  # the service's command, with the same overrides the board gets
  "$PY" -m fer_edge.cli run --config "$REPO/device/config.example.yaml" --model "$MODEL" --threads 1 \
    --source "$1" --output "jsonl:$2" --log-level warning
}
host_run "$WORK/data/frames" "$WORK/host_frames.jsonl"
host_run "$WORK/data/face.avi" "$WORK/host_video.jsonl"

cached_root
step "unpack the root"
mkdir -p "$ROOT"
tar -xf "$TARBALL" -C "$ROOT"
# qemu-user 7.2 shows the guest the host's x86 /proc/cpuinfo, on which LiteRT's cpuinfo library
# segfaults: give it a Raspberry Pi 4's (Cortex-A72: implementer 0x41, part 0xd08), one per host CPU.
# Without /sys, XNNPACK is silently skipped.
cpuinfo="$WORK/cpuinfo"
: >"$cpuinfo"
for ((i = 0; i < $(nproc); i++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" >>"$cpuinfo"
done
printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B (emulated)\n' >>"$cpuinfo"
mnt -t proc proc "$ROOT/proc"
mnt --bind "$cpuinfo" "$ROOT/proc/cpuinfo"
mnt -t sysfs -o ro sysfs "$ROOT/sys"
# The aarch64 wheels of the device extra, fetched by the host's pip (native speed; pip under qemu
# spends minutes on TLS and hashing) and kept in the cache; the board's pip finds them through
# PIP_FIND_LINKS and still resolves against the index. fer-edge itself always comes from the wheel
# install.sh is given (a file:// reference), never from here.
step "aarch64 wheels of the device extra (host pip, cached in $CACHE/wheels)"
plat=()
for t in manylinux_2_36 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
  plat+=(--platform "${t}_aarch64")
done
"$PY" -m pip download --quiet --disable-pip-version-check --dest "$CACHE/wheels" --only-binary=:all: "${plat[@]}" \
  --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none "$WHEEL[device]" pip >"$WORK/download.log" 2>&1 \
  || echo "    (host download failed, the board's pip fetches everything itself: $(tail -1 "$WORK/download.log"))"
rm -f "$CACHE"/wheels/fer_edge-*.whl
mkdir -p "$ROOT/wheels"
mnt --bind -o ro "$CACHE/wheels" "$ROOT/wheels"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# pip in the root checks certificates against this host's bundle (a proxy's CA may be in it)
cp -L "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/etc/ssl/host-ca.pem"
mkdir -p "$ROOT/src/dist" "$ROOT/src/tests/golden"
cp -r "$REPO/device" "$ROOT/src/device"
cp "$WHEEL" "$ROOT/src/dist/"
cp "$MODEL" "$ROOT/src/model.tflite"
cp "$REPO/tests/golden_crops.py" "$ROOT/src/tests/"
cp "$REPO/tests/golden/crop_frame.png" "$REPO/tests/golden/crops.json" "$ROOT/src/tests/golden/"
cp -r "$WORK/data" "$ROOT/src/data"
chmod -R a+rX "$ROOT/src"
board_wheel="/src/dist/$(basename "$WHEEL")"

# env -i: nothing of the host's environment leaks in (pip's host config, PYTHONPATH); QEMU_CPU
# again inside, since every arm64 exec reads it: qemu's default 'max' CPU (SME) makes XNNPACK's int8
# results wrong.
proxies=()
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -z "${!v:-}" ] || proxies+=("$v=${!v}")
done
inroot() {
  QEMU_CPU=cortex-a72 chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 QEMU_CPU=cortex-a72 PIP_CERT=/etc/ssl/host-ca.pem PIP_DEFAULT_TIMEOUT=120 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/wheels "${proxies[@]}" "$@"
}
[ "$(inroot uname -m)" = aarch64 ] || fail "the root does not run as aarch64 ($(inroot uname -m))"

# --- install, as a user would ----------------------------------------------------------------------
step "install.sh without a wheel or checkout must refuse"
if out="$(inroot bash /src/device/install.sh 2>&1)"; then fail "install.sh with no source exited 0: $out"; fi
case "$out" in *--wheel*--source*) echo "    refused: $out" ;; *) fail "install.sh's refusal does not name the fix: $out" ;; esac
step "install.sh --wheel $(basename "$WHEEL") --model (pip under emulation: minutes)"
inroot bash /src/device/install.sh --wheel "$board_wheel" --model /src/model.tflite --no-start >"$WORK/install.log" 2>&1 \
  || { tail -30 "$WORK/install.log"; fail "device/install.sh failed on the board (log above)"; }
grep -E '^==>|note:|warning:|systemd' "$WORK/install.log" | sed 's/^/    /' || true
FE=/opt/fer-edge/venv/bin/fer-edge
inroot "$FE" --version | sed 's/^/    board: /'
inroot /opt/fer-edge/venv/bin/python -c "import sys, fer_edge; assert 'tensorflow' not in sys.modules; print('    board imports fer_edge from', fer_edge.__file__)"

step "golden crops on the board"
inroot /opt/fer-edge/venv/bin/python /src/tests/golden_crops.py | sed 's/^/    /' \
  || fail "the board's crops differ from the host's golden checksums"

step "fer-edge doctor on the board"
inroot "$FE" doctor --json --model /var/lib/fer-edge/model.tflite --threads 1 >"$WORK/doctor.json" || true
"$PY" - "$WORK/doctor.json" <<'EOF' || fail "fer-edge doctor on the board (above)"
import json, sys
checks = {c["name"]: c for c in json.load(open(sys.argv[1]))}
for c in checks.values():
    print(f"    {c['status']:4} {c['name']}: {c['detail']}")
must = ("tflite runtime", "xnnpack", "os", "model", "model ops", "face detector")
bad = [n for n, c in checks.items() if c["status"] == "fail"] + [n for n in must if checks.get(n, {}).get("status") != "ok"]
if bad:
    sys.exit(f"    not ok: {', '.join(dict.fromkeys(bad))}")
EOF

step "the service's command on the board, as user fer-edge: PNG frames, then the video"
board_run() {
  inroot runuser -u fer-edge -- "$FE" run --config /etc/fer-edge/config.yaml --threads 1 \
    --source "$1" --output "jsonl:/var/log/fer-edge/$2" --log-level warning
}
board_run /src/data/frames smoke_frames.jsonl || fail "fer-edge run on the PNG frames failed on the board"
board_run /src/data/face.avi smoke_video.jsonl || fail "fer-edge run on the video failed on the board"
"$PY" "$REPO/tests/arm64_smoke_data.py" compare "$WORK/host_frames.jsonl" "$ROOT/var/log/fer-edge/smoke_frames.jsonl" frames \
  || fail "PNG frames: the board's JSON lines differ from the host's"
"$PY" "$REPO/tests/arm64_smoke_data.py" compare "$WORK/host_video.jsonl" "$ROOT/var/log/fer-edge/smoke_video.jsonl" video \
  || fail "video: the board's labels differ from the host's"
step "arm64 smoke: PASSED in $((SECONDS - T0)) s"
