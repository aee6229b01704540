#!/usr/bin/env bash
# Install (from Debian's package) and start a ClickHouse server on 127.0.0.1, idempotently.
#   scripts/clickhouse.sh start   install if missing, start if not answering, wait until ready
#   scripts/clickhouse.sh stop    stop the server this script started
#   scripts/clickhouse.sh status  exit 0 when a server answers on the port
# State lives under $CDC_SERVICES_DIR (default: .services/ in the repository), never in /var/lib.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${CDC_SERVICES_DIR:-$here/.services}/clickhouse
http_port=${CLICKHOUSE_HTTP_PORT:-8123}
tcp_port=${CLICKHOUSE_TCP_PORT:-9000}
source "$here/scripts/debian-server.sh"

ping() { curl -fsS "http://127.0.0.1:${http_port}/ping" >/dev/null 2>&1; }

install() {
  command -v clickhouse-server >/dev/null 2>&1 && return 0
  echo "clickhouse: installing Debian's clickhouse-server" >&2
  apt_install clickhouse-server clickhouse-client
}

write_config() {
  mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/server.err.log</errorlog><size>100M</size><count>2</count></logger>
  <http_port>${http_port}</http_port>
  <tcp_port>${tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>30</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
XML
  # Compressed blocks of 4-16 KiB: the mirrors and indexes are read by scattered keys, and each
  # key costs the server every block that holds it (README, "Older ClickHouse"). 18.16 has these
  # only server-wide; current servers get them per table from `migrate`.
  cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage><load_balancing>random</load_balancing><min_compress_block_size>4096</min_compress_block_size><max_compress_block_size>16384</max_compress_block_size></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
    <cdc><password>${CLICKHOUSE_CDC_PASSWORD:-cdc-local-password}</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></cdc>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start() {
  if ping; then echo "clickhouse: already answering on 127.0.0.1:${http_port}" >&2; return 0; fi
  install
  write_config
  echo "clickhouse: starting on 127.0.0.1:${http_port} (state in $dir)" >&2
  clickhouse-server --config-file="$dir/config.xml" --pid-file="$dir/server.pid" --daemon
  wait_ready clickhouse "$dir/log/server.err.log" ping
}

stop() {
  [ -f "$dir/server.pid" ] || return 0
  pid=$(cat "$dir/server.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  rm -f "$dir/server.pid"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) ping ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
