#!/usr/bin/env bash
# Install the fer-edge daemon as a systemd service on 64-bit Raspberry Pi OS (Bookworm or later).
#
#   sudo ./install.sh [--model MODEL.tflite] [--source DIR_OR_WHEEL] [--no-start]
#
# What it does (idempotent; rerun it to upgrade):
#   1. apt: python3-picamera2 (the camera stack cannot be pip-installed) and python3-venv
#   2. a venv at /opt/fer-edge/venv made with --system-site-packages, so it sees picamera2
#   3. pip install 'fer-edge[device]' into it (LiteRT, OpenCV headless, paho-mqtt)
#   4. a system user fer-edge in group video, /etc/fer-edge/config.yaml, /var/lib/fer-edge, /var/log/fer-edge
#   5. the systemd unit fer-edge.service, enabled and started (unless --no-start)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX=/opt/fer-edge
VENV="$PREFIX/venv"
ETC=/etc/fer-edge
STATE=/var/lib/fer-edge
LOGS=/var/log/fer-edge
USER_NAME=fer-edge
MODEL=""
SOURCE="fer-edge[device]"
START=1

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="${2:?--model needs a path}"; shift 2 ;;
    --source) SOURCE="${2:?--source needs a directory or wheel}[device]"; shift 2 ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root: sudo $0 $*"
arch="$(uname -m)"
bits="$(getconf LONG_BIT)"
if [ "$arch" != "aarch64" ] || [ "$bits" != "64" ]; then
  die "this is $arch with a $bits-bit userland. LiteRT ships wheels for 64-bit ARM (aarch64) and x86_64 only: \
install the 64-bit Raspberry Pi OS (Raspberry Pi Imager -> 'Raspberry Pi OS (64-bit)')."
fi
[ -z "$MODEL" ] || [ -f "$MODEL" ] || die "model $MODEL not found"

echo "==> apt packages"
apt-get update -qq
apt-get install -y --no-install-recommends python3-picamera2 python3-venv python3-pip

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
"$VENV/bin/pip" install --quiet --upgrade -c "$constraints" "$SOURCE"
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
install -m 0644 "$HERE/fer-edge.service" /etc/systemd/system/fer-edge.service
systemctl daemon-reload
if [ "$START" -eq 1 ]; then
  if [ -f "$STATE/model.tflite" ]; then
    systemctl enable --now fer-edge.service
    systemctl --no-pager status fer-edge.service || true
  else
    systemctl enable fer-edge.service
    echo "    no model yet: copy one with  sudo $0 --model MODEL.tflite  (then it starts)"
  fi
fi

echo "==> checks"
runuser -u "$USER_NAME" -- "$VENV/bin/fer-edge" doctor ${MODEL:+--model "$STATE/model.tflite"} || true
echo "done. Logs: journalctl -u fer-edge -f   Results: $LOGS/results.jsonl   Status page: http://127.0.0.1:8080/"
