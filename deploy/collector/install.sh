#!/usr/bin/env bash
# Installs the VenueGuard collector as a systemd service on the authority's server.
#
#   sudo deploy/collector/install.sh [--root DIR] [--wheels DIR] [--python PY] PACKAGE [CONFIG]
#
#   PACKAGE    a venueguard wheel (.whl) or source folder
#   CONFIG     a collector.toml to install as /etc/venueguard/collector.toml (the previous one is
#              kept as collector.toml.bak); without it an existing file is kept, else
#              deploy/collector.example.toml is installed
#   --wheels   folder of wheels for an offline install (`pip wheel -w wheels venueguard-*.whl`)
#   --python   interpreter for the virtual environment (default python3, >= 3.11)
#   --root DIR install into DIR as if it were / without touching this system: no useradd, chown,
#              migrate, systemctl or doctor; what was skipped is printed
#
# Layout: /opt/venueguard-collector/venv, /etc/venueguard/collector.toml,
# /var/lib/venueguard-collector (vault, keys, default SQLite index),
# /etc/systemd/system/venueguard-collector.service (runs `migrate` before every start).
# Exit status: 0 installed and running (the doctor's verdict is printed, not fatal: a broker or
# database that is not up yet is the installer's next step); 1 install failed; 2 bad usage.
set -euo pipefail

# Operator-facing messages (zh-CN), in one place for review.
M_USAGE="用法：install.sh [--root 目录] [--wheels 目录] [--python 解释器] 安装包(.whl或源码目录) [collector.toml]"
M_NEED_ROOT="需要 root 权限：请用 sudo 运行（或用 --root 目录 做试安装）。"
M_NO_PACKAGE="找不到安装包："
M_NO_CONFIG="找不到配置文件："
M_BAD_CONFIG="配置文件有误，未安装："
M_NO_PYTHON="找不到 Python 3.11 或更新版本："
M_CONFIG_KEPT="保留已有配置："
M_CONFIG_NEW="已写入配置（请填写消息服务器、数据库等后 systemctl restart venueguard-collector）："
M_SKIPPED="[--root] 未执行："
M_MIGRATE_FAILED="数据库结构升级失败（见上）：请检查 [collector] database_url，修正后重新运行安装。"
M_NOT_ACTIVE="服务未能启动，请查看：journalctl -u venueguard-collector -n 50"
M_DOCTOR="安装完成，下面是自检（venueguard-collector doctor）的结果："
M_DOCTOR_RC="自检退出码 %s（0 正常，1 有问题）：请按表中“说明与整改”处理。"
M_DONE="安装完成："

HERE="$(cd "$(dirname "$0")" && pwd)"
NAME="venueguard-collector"
UNIT="venueguard-collector.service"
USER_NAME="venueguard-collector"
STATE_DIR="/var/lib/venueguard-collector"
# shellcheck source=../install-common.sh
. "$HERE/../install-common.sh"
parse_options "$@"
set -- "${ARGS[@]}"
[ $# -eq 1 ] || [ $# -eq 2 ] || die "$M_USAGE" 2
PACKAGE="$(realpath -m "$1")"
CONFIG="${2:+$(realpath -m "$2")}"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "$M_NO_CONFIG$CONFIG"
prepare "$PACKAGE"
CLI=(/opt/venueguard-collector/venv/bin/venueguard-collector --config /etc/venueguard/collector.toml)

# 1. The service user.
make_user

# 2. Its own virtual environment.
make_venv "$PACKAGE"
# The wheel carries the code but not the top-level rules/ folder the collector falls back to
# ([rules] folder empty = rules/ beside the code): put the release's rules there.
SHIPPED="$("$VENV/bin/python" -I -c 'from collector.rulerunner import SHIPPED_RULES; print(SHIPPED_RULES)')"
if [ ! -d "$SHIPPED" ] && [ -d "$HERE/../../rules" ]; then
  cp -r "$HERE/../../rules" "$SHIPPED"  # rule files and the regulation texts they quote
  chmod -R u=rwX,go=rX "$SHIPPED"
fi

# 3. The config, checked by the code that will read it before it is put in place.
SOURCE="${CONFIG:-$HERE/../collector.example.toml}"
"$VENV/bin/python" -I - "$SOURCE" <<'PY' || die "$M_BAD_CONFIG$SOURCE"
import sys
from pathlib import Path
from collector.config import ConfigError, load
try:
    load(Path(sys.argv[1]))
except ConfigError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
PY
install -d -m 0750 "$ETC"
if [ -n "$CONFIG" ]; then
  [ ! -f "$ETC/collector.toml" ] || cp -p "$ETC/collector.toml" "$ETC/collector.toml.bak"
  install -m 0640 "$CONFIG" "$ETC/collector.toml"
  echo "$M_CONFIG_NEW$ETC/collector.toml"
elif [ -f "$ETC/collector.toml" ]; then
  echo "$M_CONFIG_KEPT$ETC/collector.toml"
else
  install -m 0640 "$SOURCE" "$ETC/collector.toml"
  echo "$M_CONFIG_NEW$ETC/collector.toml"
fi
install_unit

if [ -n "$ROOT" ]; then
  skipped "chown root:$USER_NAME /etc/venueguard /etc/venueguard/collector.toml; chown $USER_NAME: /var/lib/venueguard-collector"
  skipped "${CLI[*]} migrate"
  skipped "systemctl daemon-reload; systemctl enable --now $UNIT"
  skipped "${CLI[*]} doctor"
  echo "$M_DONE$ROOT"
  exit 0
fi

chown "root:$USER_NAME" "$ETC" "$ETC/collector.toml"
chown "$USER_NAME:$USER_NAME" "$STATE"
as_service() { setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups -- "$@"; }
# 4. Schema first, so a wrong database URL is reported here rather than in a restart loop.
as_service "${CLI[@]}" migrate || die "$M_MIGRATE_FAILED"
start_unit 5
echo "$M_DOCTOR"
rc=0
as_service "${CLI[@]}" doctor || rc=$?
# shellcheck disable=SC2059
printf "$M_DOCTOR_RC\n" "$rc"
echo "$M_DONE/opt/venueguard-collector"
