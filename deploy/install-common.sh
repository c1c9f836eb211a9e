# Shared by the install.sh and uninstall.sh of deploy/agent and deploy/collector (sourced, not run): the options,
# the service user, the virtual environment and the unit. The sourcing script sets NAME
# (venueguard-agent / venueguard-collector), UNIT, USER_NAME, STATE_DIR and its M_* messages first.

die() { echo "$1" >&2; exit "${2:-1}"; }
skipped() { echo "$M_SKIPPED$*"; }

# parse_options "$@": sets ROOT, WHEELS and PY; the positional arguments are left in ARGS.
parse_options() {
  ROOT="" WHEELS="" PY="python3"
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) ROOT="$(realpath -m "${2:?$M_USAGE}")"; shift 2 ;;
      --wheels) WHEELS="$(realpath "${2:?$M_USAGE}")"; shift 2 ;;
      --python) PY="${2:?$M_USAGE}"; shift 2 ;;
      -h|--help) echo "$M_USAGE"; exit 0 ;;
      -*) die "$M_USAGE" 2 ;;
      *) break ;;
    esac
  done
  ARGS=("$@")
}

# prepare PACKAGE: the package exists, we are root (unless --root), Python >= 3.11; sets the paths.
prepare() {
  [ -e "$1" ] || die "$M_NO_PACKAGE$1"
  [ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "$M_NEED_ROOT"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || die "$M_NO_PYTHON$PY"
  PREFIX="$ROOT/opt/$NAME"
  VENV="$PREFIX/venv"
  ETC="$ROOT/etc/venueguard"
  STATE="$ROOT$STATE_DIR"
  UNITS="$ROOT/etc/systemd/system"
}

# make_user: the service user (system account, no login, no home of its own); an upgrade stops the
# service first, because the virtual environment is replaced under it.
make_user() {
  local add=(useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin "$USER_NAME")
  if [ -n "$ROOT" ]; then
    skipped "${add[*]}"
    return
  fi
  getent passwd "$USER_NAME" >/dev/null || "${add[@]}"
  systemctl stop "$UNIT" 2>/dev/null || true
}

# make_venv PACKAGE: its own virtual environment, rebuilt on every install so no stale module survives
# an upgrade; offline from --wheels when given (exam LANs are isolated from the internet).
make_venv() {
  rm -rf "$VENV"
  mkdir -p "$PREFIX"
  "$PY" -m venv "$VENV"
  local pip=("$VENV/bin/python" -I -m pip install --disable-pip-version-check --no-input -q)
  [ -z "$WHEELS" ] || pip+=(--no-index --find-links "$WHEELS")
  "${pip[@]}" "$1"
  install -m 0644 "$HERE/../README.md" "$PREFIX/README.md"
}

# install_unit: the state folder (the service user's, 0750) and the unit file.
install_unit() {
  install -d -m 0750 "$STATE"
  install -d -m 0755 "$UNITS"
  install -m 0644 "$HERE/$UNIT" "$UNITS/$UNIT"
}

# start_unit SECONDS: enable and start the service, and insist it is still running after SECONDS.
start_unit() {
  systemctl daemon-reload
  systemctl enable --now "$UNIT"
  sleep "$1"
  systemctl is-active --quiet "$UNIT" || die "$M_NOT_ACTIVE"
}

# -- uninstall.sh ----------------------------------------------------------------------------------

# parse_uninstall_options "$@": sets ROOT and PURGE.
parse_uninstall_options() {
  ROOT="" PURGE=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --root) ROOT="$(realpath -m "${2:?$M_USAGE}")"; shift 2 ;;
      --purge) PURGE=1; shift ;;
      -h|--help) echo "$M_USAGE"; exit 0 ;;
      *) die "$M_USAGE" 2 ;;
    esac
  done
  [ -n "$ROOT" ] || [ "$(id -u)" -eq 0 ] || die "$M_NEED_ROOT"
}

# remove_service: stop and disable the unit, delete it and the virtual environment (never the state).
remove_service() {
  if [ -z "$ROOT" ]; then
    systemctl disable --now "$UNIT" 2>/dev/null || true
  else
    skipped "systemctl disable --now $UNIT"
  fi
  rm -f "$ROOT/etc/systemd/system/$UNIT"
  [ -n "$ROOT" ] || systemctl daemon-reload
  rm -rf "$ROOT/opt/$NAME"
}

# remove_user: the service user (--purge only; not under --root).
remove_user() {
  if [ -z "$ROOT" ]; then
    userdel "$USER_NAME" 2>/dev/null || true
  else
    skipped "userdel $USER_NAME"
  fi
}
