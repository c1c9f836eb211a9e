#!/usr/bin/env bash
# Sets up this machine for VenueGuard and runs the demo or the whole test suite.
#   bash deploy/dev.sh demo   - broker + collector + simulated venues, page at http://127.0.0.1:8080
#   bash deploy/dev.sh test   - the whole pytest suite (needs root for apt and, later, network namespaces)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto mosquitto-clients iproute2 iputils-ping iputils-arping ieee-data arpwatch
              gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good python3-gi chromium fonts-noto-cjk
              victoria-metrics systemd wrk)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; exit 1; fi
}

install_system_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  fi
}

install_python_packages() {
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
}

ensure_postgres() {
  # The store tests run on PostgreSQL too: 127.0.0.1:5432, trust auth, database "test".
  if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
}

case "${1:-}" in
  demo)
    install_system_packages
    install_python_packages
    exec .venv/bin/venueguard-collector demo "${@:2}"
    ;;
  test)
    install_system_packages
    install_python_packages
    ensure_postgres
    exec .venv/bin/python -m pytest "${@:2}"
    ;;
  *)
    echo "usage: bash deploy/dev.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
