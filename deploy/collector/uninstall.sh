#!/usr/bin/env bash
# Removes the VenueGuard collector service and its virtual environment.
#
#   sudo deploy/collector/uninstall.sh [--root DIR] [--purge]
#
# Never deletes /var/lib/venueguard-collector: it holds the vault, the legal record that must be
# kept at least 3 years (粤应急规〔2023〕3号 二(四)), and the signing keys that make it verifiable.
# Archive it and delete it by hand when that is allowed. --purge also removes the config and the
# service user. --root DIR works on DIR as if it were /, without systemctl or userdel.
set -euo pipefail

M_USAGE="用法：uninstall.sh [--root 目录] [--purge]"
M_NEED_ROOT="需要 root 权限：请用 sudo 运行。"
M_KEPT_DATA="已保留 /var/lib/venueguard-collector：其中的证据库须至少保存 3 年，签名密钥用于核验证据。请归档后在允许时手动删除。"
M_KEPT_CONFIG="已保留配置 /etc/venueguard/collector.toml（--purge 可一并删除）。"
M_PURGED="已删除配置和服务用户。"
M_SKIPPED="[--root] 未执行："
M_DONE="已卸载 VenueGuard 采集端服务。"

HERE="$(cd "$(dirname "$0")" && pwd)"
NAME="venueguard-collector"
UNIT="venueguard-collector.service"
USER_NAME="venueguard-collector"
# shellcheck source=../install-common.sh
. "$HERE/../install-common.sh"
parse_uninstall_options "$@"
remove_service
echo "$M_KEPT_DATA"

if [ "$PURGE" -eq 1 ]; then
  rm -f "$ROOT/etc/venueguard/collector.toml" "$ROOT/etc/venueguard/collector.toml.bak"
  rmdir "$ROOT/etc/venueguard" 2>/dev/null || true  # the agent's config may live there too
  remove_user
  echo "$M_PURGED"
else
  echo "$M_KEPT_CONFIG"
fi
echo "$M_DONE"
