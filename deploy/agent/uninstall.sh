#!/usr/bin/env bash
# Removes the VenueGuard agent service and its virtual environment.
#
#   sudo deploy/agent/uninstall.sh [--root DIR] [--purge]
#
# Keeps /var/lib/venueguard and /etc/venueguard unless --purge: the outbox may still hold records
# the collector has not acknowledged (evidence that exists nowhere else), and the bundle is the
# host's identity. --purge deletes them and the service user too, after saying how many records
# were still unsent. --root DIR works on DIR as if it were /, without systemctl or userdel.
set -euo pipefail

M_USAGE="用法：uninstall.sh [--root 目录] [--purge]"
M_NEED_ROOT="需要 root 权限：请用 sudo 运行。"
M_KEPT="已保留 /var/lib/venueguard（发件箱中可能还有采集端尚未确认的证据记录）和 /etc/venueguard（配置与注册包）。确认证据均已送达后，可用 --purge 删除。"
M_UNSENT="警告：发件箱中还有 %s 条未经采集端确认的记录，将随 --purge 一并删除。"
M_PURGED="已删除状态、配置和服务用户。"
M_SKIPPED="[--root] 未执行："
M_DONE="已卸载 VenueGuard 代理服务。"

HERE="$(cd "$(dirname "$0")" && pwd)"
NAME="venueguard-agent"
UNIT="venueguard-agent.service"
USER_NAME="venueguard"
# shellcheck source=../install-common.sh
. "$HERE/../install-common.sh"
parse_uninstall_options "$@"
remove_service

if [ "$PURGE" -eq 0 ]; then
  echo "$M_KEPT"
  echo "$M_DONE"
  exit 0
fi
OUTBOX="$ROOT/var/lib/venueguard/outbox.sqlite3"
if [ -f "$OUTBOX" ] && command -v python3 >/dev/null; then
  unsent="$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute("select count(*) from records").fetchone()[0])' "$OUTBOX" 2>/dev/null || echo "?")"
  [ "$unsent" = "0" ] || printf "$M_UNSENT\n" "$unsent" >&2
fi
rm -rf "$ROOT/var/lib/venueguard" "$ROOT/etc/venueguard/agent.toml" "$ROOT/etc/venueguard/agent.bundle.json"
rmdir "$ROOT/etc/venueguard" 2>/dev/null || true  # the collector's config may live there too
remove_user
echo "$M_PURGED"
echo "$M_DONE"
