#!/usr/bin/env bash
# Install the fer-edge daemon as a systemd service on 64-bit Raspberry Pi OS (Bookworm or later).
#
#   sudo ./install.sh --wheel fer_edge-VERSION-py3-none-any.whl [--model MODEL.tflite] [--no-start]
#   sudo ./install.sh --source /path/to/fer-edge-checkout    [--model MODEL.tflite] [--no-start]
#
# fer-edge is installed from the wheel (python -m build, on the host) or the checkout you name - never
# by name from a package index: fer-edge is not published there, and whoever registers that name
# would be installed on your board. With neither, the script stops and says so.
# What it does (idempotent; rerun it to upgrade):
#   1. apt: python3-venv, python3-pip, and python3-picamera2 where the OS has it (Raspberry Pi OS)
#   2. a venv at /opt/fer-edge/venv made with --system-site-packages, so it sees the apt picamera2
#   3. pip install of fer-edge[device] from your wheel or checkout (LiteRT, OpenCV headless, paho-mqtt)
#   4. a system user fer-edge in group video, /etc/fer-edge/config.yaml, /var/lib/fer-edge, /var/log/fer-edge
#   5. the systemd unit fer-edge.service, enabled and started (unless --no-start or no systemd runs)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/opt/fer-edge
VENV="$PREFIX/venv"
ETC=/etc/fer-edge
STATE=/var/lib/fer-edge
LOGS=/var/log/fer-edge
USER_NAME=fer-edge
MODEL=""
SOURCE=""
START=1

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="${2:?--model needs a path}"; shift 2 ;;
    --wheel|--source) SOURCE="${2:?$1 needs a wheel file or a checkout directory}"; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

# What pip installs: a PEP 508 direct reference to the file or folder given, so pip takes exactly
# that (and refuses it if it is not fer-edge) - no package index is asked for fer-edge itself.
[ -n "$SOURCE" ] || die "no fer-edge to install: give --wheel dist/fer_edge-VERSION-py3-none-any.whl \
(python -m build on the host) or --source PATH_OF_A_FER_EDGE_CHECKOUT; it is never installed by name from a package index"
if [ -f "$SOURCE" ]; then
  case "$(basename "$SOURCE")" in
    fer_edge-*.whl) ;;
    *) die "--wheel $SOURCE is not a fer-edge wheel (fer_edge-VERSION-py3-none-any.whl); build one with python -m build" ;;
  esac
elif [ -d "$SOURCE" ]; then
  grep -qs '^name = "fer-edge"' "$SOURCE/pyproject.toml" \
    || die "--source $SOURCE is not a fer-edge checkout (no pyproject.toml naming fer-edge); give the folder holding it"
else
  die "--wheel/--source $SOURCE: no such file or directory; give a fer_edge-*.whl file or a fer-edge checkout"
fi
if [ -d "$SOURCE" ]; then SOURCE="$(cd "$SOURCE" && pwd)"; else SOURCE="$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")"; fi
REQUIREMENT="fer-edge[device] @ file://$SOURCE"

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"
arch="$(uname -m)"
bits="$(getconf LONG_BIT)"
if [ "$arch" != "aarch64" ] || [ "$bits" != "64" ]; then
  die "this is $arch with a $bits-bit userland. LiteRT ships wheels for 64-bit ARM (aarch64) and x86_64 only: \
install the 64-bit Raspberry Pi OS (Raspberry Pi Imager -> 'Raspberry Pi OS (64-bit)')."
fi
[ -z "$MODEL" ] || [ -f "$MODEL" ] || die "model $MODEL not found"

echo "==> apt packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs="python3-venv python3-pip"
# Raspberry Pi OS ships picamera2 (matched to its libcamera) only as an apt package; plain Debian
# and other boards have none: they use a V4L2/USB camera, a video file or an image folder.
if apt-cache show python3-picamera2 >/dev/null 2>&1; then
  pkgs="$pkgs python3-picamera2"
else
  echo "    note: python3-picamera2 is not in this system's apt sources (not Raspberry Pi OS?): no Pi camera, V4L2 cameras still work"
fi
# shellcheck disable=SC2086  # a word list on purpose
apt-get install -y -q --no-install-recommends $pkgs

echo "==> user $USER_NAME"
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
fi
usermod -aG video "$USER_NAME"
install -d -o "$USER_NAME" -g "$USER_NAME" -m 0750 "$STATE" "$LOGS"
install -d -m 0755 "$PREFIX" "$ETC"

echo "==> venv $VENV (sees the system picamera2)"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# picamera2 from apt uses C extensions (simplejpeg, ...) built against the system numpy. On
# Bookworm that is numpy 1.x, which a numpy 2 in the venv would shadow and break: keep numpy 1.x
# there (OpenCV 4.12 needs numpy 2, 4.11 does not).
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
sys_numpy="$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null || echo none)"
case "$sys_numpy" in
  1.*) printf 'numpy<2\nopencv-python-headless<4.12\n' > "$constraints"
       echo "    system numpy $sys_numpy: pinning numpy<2 in the venv" ;;
  *)   : > "$constraints" ;;
esac
# fer-edge itself first, forced: pip keeps an installed fer-edge of the same version as "already
# satisfied", and a rerun with a new build of that version must still replace it. Then its dependencies.
"$VENV/bin/pip" install --quiet --no-deps --force-reinstall "$REQUIREMENT"
"$VENV/bin/pip" install --quiet --upgrade -c "$constraints" "$REQUIREMENT"
"$VENV/bin/fer-edge" --version || die "fer-edge does not start in $VENV; see the pip output above"
"$VENV/bin/python" -c "import picamera2" 2>/dev/null \
  || echo "    warning: picamera2 does not import in the venv; USB cameras still work (see fer-edge doctor)"

echo "==> configuration"
if [ ! -f "$ETC/config.yaml" ]; then
  install -m 0644 "$HERE/config.example.yaml" "$ETC/config.yaml"
fi
if [ -n "$MODEL" ]; then
  install -o "$USER_NAME" -g "$USER_NAME" -m 0644 "$MODEL" "$STATE/model.tflite"
  sidecar="${MODEL%.tflite}.json"
  [ ! -f "$sidecar" ] || install -o "$USER_NAME" -g "$USER_NAME" -m 0644 "$sidecar" "$STATE/model.json"
fi
install -m 0644 "$HERE/README.md" "$PREFIX/README.md"
"$VENV/bin/fer-edge" run --config "$ETC/config.yaml" --validate-config \
  || echo "    fix $ETC/config.yaml, then: sudo systemctl restart fer-edge"

echo "==> systemd unit"
install -d -m 0755 /etc/systemd/system
install -m 0644 "$HERE/fer-edge.service" /etc/systemd/system/fer-edge.service
if [ ! -d /run/systemd/system ]; then
  # a container or chroot (the arm64 smoke test): nothing to enable; the unit's command still works
  echo "    systemd is not running here: unit installed, not enabled; the service runs: $VENV/bin/fer-edge run --config $ETC/config.yaml"
elif [ "$START" -eq 1 ]; then
  systemctl daemon-reload
  if [ -f "$STATE/model.tflite" ]; then
    systemctl enable --now fer-edge.service
    systemctl --no-pager status fer-edge.service || true
  else
    systemctl enable fer-edge.service
    echo "    no model yet: copy one with  sudo $0 --wheel WHEEL --model MODEL.tflite  (then it starts)"
  fi
else
  systemctl daemon-reload
fi

echo "==> checks"
runuser -u "$USER_NAME" -- "$VENV/bin/fer-edge" doctor ${MODEL:+--model "$STATE/model.tflite"} || true
echo "done. Logs: journalctl -u fer-edge -f   Results: $LOGS/results.jsonl   Status page: http://127.0.0.1:8080/"
