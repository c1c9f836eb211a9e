#!/usr/bin/env bash
# Installs the VenueGuard agent as a systemd service on a venue host.
#
#   sudo deploy/agent/install.sh [--root DIR] [--wheels DIR] [--python PY] PACKAGE BUNDLE
#
#   PACKAGE    a venueguard wheel (.whl) or source folder
#   BUNDLE     the agent's enrollment bundle from `venueguard-collector enroll`
#   --wheels   folder of wheels for an offline install (exam LANs are isolated from the internet):
#              made beforehand on a connected machine with `pip wheel -w wheels venueguard-*.whl`
#   --python   interpreter for the virtual environment (default python3, >= 3.11)
#   --root DIR install into DIR as if it were / without touching this system: no useradd, chown or
#              systemctl, and no readiness check; what was skipped is printed (tests, image builds)
#
# Layout: /opt/venueguard-agent/venv (its own virtual environment), /etc/venueguard/agent.toml
# (kept when present), /etc/venueguard/agent.bundle.json (0600, the service user's),
# /var/lib/venueguard (outbox and state), /etc/systemd/system/venueguard-agent.service.
# Exit status: 0 installed and running (whatever the readiness check found: it judges the venue,
# not the install, and is printed for the installer to act on); 1 install failed; 2 bad usage.
set -euo pipefail

# Operator-facing messages (zh-CN), in one place for review.
M_USAGE="用法：install.sh [--root 目录] [--wheels 目录] [--python 解释器] 安装包(.whl或源码目录) 注册包(.bundle.json)"
M_NEED_ROOT="需要 root 权限：请用 sudo 运行（或用 --root 目录 做试安装）。"
M_NO_PACKAGE="找不到安装包："
M_NO_BUNDLE="找不到注册包（由采集端 venueguard-collector enroll 生成）："
M_BAD_BUNDLE="注册包无效，未安装："
M_NO_PYTHON="找不到 Python 3.11 或更新版本："
M_NO_ADM="系统没有 adm 组：日志监测读取 /var/log 需要它，请先创建（groupadd --system adm）。"
M_CONFIG_KEPT="保留已有配置："
M_CONFIG_NEW="已写入配置（请按考点实际情况修改后 systemctl restart venueguard-agent）："
M_SKIPPED="[--root] 未执行："
M_NOT_ACTIVE="服务未能启动，请查看：journalctl -u venueguard-agent -n 50"
M_CHECK="安装完成，下面是考前检查（venueguard-agent check）的结果："
M_CHECK_RC="考前检查退出码 %s（0 通过，1 不通过，3 有项目无法检查）：这反映考点现状，不影响安装；请按表中“如何整改”处理。"
M_DONE="安装完成："

HERE="$(cd "$(dirname "$0")" && pwd)"
NAME="venueguard-agent"
UNIT="venueguard-agent.service"
USER_NAME="venueguard"
STATE_DIR="/var/lib/venueguard"
# shellcheck source=../install-common.sh
. "$HERE/../install-common.sh"
parse_options "$@"
set -- "${ARGS[@]}"
[ $# -eq 2 ] || die "$M_USAGE" 2
PACKAGE="$(realpath -m "$1")"
BUNDLE="$(realpath -m "$2")"
[ -f "$BUNDLE" ] || die "$M_NO_BUNDLE$BUNDLE"
prepare "$PACKAGE"

# 1. The service user, in group adm to read the system logs it watches.
[ -n "$ROOT" ] || getent group adm >/dev/null || die "$M_NO_ADM"
make_user

# 2. Its own virtual environment.
make_venv "$PACKAGE"

# 3. The bundle is checked by the code that will read it before anything is put in place.
AGENT_ID="$("$VENV/bin/python" -I - "$BUNDLE" <<'PY'
import sys
from pathlib import Path
from protocol.errors import ProtocolError
from protocol.keys import read_bundle
try:
    print(read_bundle(Path(sys.argv[1])).agent_id)
except ProtocolError as exc:
    print(exc.detail, file=sys.stderr)
    sys.exit(1)
PY
)" || die "$M_BAD_BUNDLE$BUNDLE"

# 4. Config and bundle: /etc/venueguard readable by the service group only (credentials may sit there).
install -d -m 0750 "$ETC"
install -m 0600 "$BUNDLE" "$ETC/agent.bundle.json"
if [ -f "$ETC/agent.toml" ]; then
  echo "$M_CONFIG_KEPT$ETC/agent.toml"
else
  install -m 0640 "$HERE/../agent.example.toml" "$ETC/agent.toml"
  echo "$M_CONFIG_NEW$ETC/agent.toml"
fi
install_unit

if [ -n "$ROOT" ]; then
  skipped "chown root:$USER_NAME /etc/venueguard /etc/venueguard/agent.toml; chown $USER_NAME: /etc/venueguard/agent.bundle.json /var/lib/venueguard"
  skipped "systemctl daemon-reload; systemctl enable --now $UNIT"
  skipped "venueguard-agent check --config /etc/venueguard/agent.toml"
  echo "$M_DONE$AGENT_ID → $ROOT"
  exit 0
fi

chown "root:$USER_NAME" "$ETC" "$ETC/agent.toml"
chown "$USER_NAME:$USER_NAME" "$ETC/agent.bundle.json" "$STATE"
start_unit 3

# 5. The readiness check with the service's own identity and capability, so it sees what the service sees.
echo "$M_CHECK"
rc=0
setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --groups=adm --inh-caps=+net_raw --ambient-caps=+net_raw --bounding-set=-all,+net_raw \
  -- "$VENV/bin/venueguard-agent" check --config /etc/venueguard/agent.toml || rc=$?
# shellcheck disable=SC2059
printf "$M_CHECK_RC\n" "$rc"
echo "$M_DONE$AGENT_ID"
