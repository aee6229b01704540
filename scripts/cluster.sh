#!/usr/bin/env bash
# A replicated ClickHouse cluster on 127.0.0.1: one ZooKeeper and two ClickHouse replicas of one
# shard (Debian's packages), for the suite's cluster tests (crates/cdc-lambda/tests/it/cluster.rs).
#   scripts/cluster.sh start   install what is missing, start what does not answer, wait until ready
#   scripts/cluster.sh stop    stop what this script started (by its pid files, never by name)
#   scripts/cluster.sh status  exit 0 when ZooKeeper and both replicas answer
# The cluster is named $CDC_CLUSTER_NAME (default cdc); the replicas' macros are {shard} = 01 and
# {replica} = r1 / r2, and both take ON CLUSTER DDL (README, "ClickHouse clusters and ClickHouse
# Cloud"). Ports: ZooKeeper $CDC_ZOOKEEPER_PORT (2181); replica N (1, 2): HTTP
# $CDC_CLUSTER_HTTP_PORT_BASE + N (8130 + N), TCP 9130 + N, interserver 9230 + N.
# State lives under $CDC_SERVICES_DIR/cluster (default: .services/cluster in the repository).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${CDC_SERVICES_DIR:-$here/.services}/cluster
cluster=${CDC_CLUSTER_NAME:-cdc}
zk_port=${CDC_ZOOKEEPER_PORT:-2181}
http_base=${CDC_CLUSTER_HTTP_PORT_BASE:-8130}
tcp_base=${CDC_CLUSTER_TCP_PORT_BASE:-9130}
interserver_base=${CDC_CLUSTER_INTERSERVER_PORT_BASE:-9230}
replicas=(1 2)
zk_jar=/usr/share/java/zookeeper.jar
source "$here/scripts/debian-server.sh"
# For stop_pid (this script defines its own start, stop and status).
source "$here/scripts/pid-server.sh"

# ZooKeeper is ready when its `srvr` four-letter command (the only one it is allowed) reports a
# mode: `ruok` answers `imok` while the server still replays its log and refuses sessions, and a
# ClickHouse replica that meets that at start-up exits.
zk_ping() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/${zk_port} && printf srvr >&3 && cat <&3" 2>/dev/null | grep -q '^Mode: '
}
replica_ping() { curl -fsS --max-time 2 "http://127.0.0.1:$((http_base + $1))/ping" >/dev/null 2>&1; }
# A replica is ready when it answers and its ZooKeeper session is up.
replica_ready() {
  [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$((http_base + $1))/" \
    --data-binary "SELECT count() FROM system.zookeeper WHERE path = '/'" 2>/dev/null)" -gt 0 ] 2>/dev/null
}
status() {
  zk_ping || return 1
  for n in "${replicas[@]}"; do replica_ping "$n" || return 1; done
}

install() {
  command -v clickhouse-server >/dev/null 2>&1 || {
    echo "cluster: installing Debian's clickhouse-server" >&2
    apt_install clickhouse-server clickhouse-client
  }
  [ -f "$zk_jar" ] && command -v java >/dev/null 2>&1 || {
    echo "cluster: installing Debian's zookeeper" >&2
    apt_install zookeeper
  }
}

start_zookeeper() {
  if zk_ping; then echo "cluster: ZooKeeper already answering on 127.0.0.1:${zk_port}" >&2; return 0; fi
  mkdir -p "$dir/zookeeper/data"
  # Standalone, on 127.0.0.1 only; no admin web server (it would take port 8080), no other
  # four-letter command than the readiness check's, transaction logs preallocated by 16 MiB (not 64).
  cat >"$dir/zookeeper/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/zookeeper/data
clientPort=${zk_port}
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=srvr
preAllocSize=16384
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG
  echo "cluster: starting ZooKeeper on 127.0.0.1:${zk_port}" >&2
  # Its own session (it outlives this script; stop ends it by its pid). 256 MiB of heap is plenty
  # for a test cluster's metadata.
  setsid java -Xms64m -Xmx256m -XX:+UseSerialGC -Dzookeeper.admin.enableServer=false \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$zk_jar:/usr/share/java/slf4j-simple.jar" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zookeeper/zoo.cfg" \
    >"$dir/zookeeper/zookeeper.log" 2>&1 </dev/null &
  echo $! >"$dir/zookeeper/zookeeper.pid"
  wait_ready zookeeper "$dir/zookeeper/zookeeper.log" zk_ping
}

write_replica_config() { # replica number
  local n=$1 rdir="$dir/replica$1"
  mkdir -p "$rdir/data" "$rdir/tmp" "$rdir/log" "$rdir/user_files" "$rdir/format_schemas"
  local shard_replicas=""
  for m in "${replicas[@]}"; do
    shard_replicas+="<replica><host>127.0.0.1</host><port>$((tcp_base + m))</port></replica>"
  done
  cat >"$rdir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$rdir/log/server.log</log><errorlog>$rdir/log/server.err.log</errorlog><size>100M</size><count>2</count></logger>
  <http_port>$((http_base + n))</http_port>
  <tcp_port>$((tcp_base + n))</tcp_port>
  <interserver_http_port>$((interserver_base + n))</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <listen_host>127.0.0.1</listen_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>30</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>134217728</mark_cache_size>
  <uncompressed_cache_size>134217728</uncompressed_cache_size>
  <path>$rdir/data/</path>
  <tmp_path>$rdir/tmp/</tmp_path>
  <user_files_path>$rdir/user_files/</user_files_path>
  <format_schema_path>$rdir/format_schemas/</format_schema_path>
  <users_config>$rdir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <remote_servers><${cluster}><shard><internal_replication>true</internal_replication>${shard_replicas}</shard></${cluster}></remote_servers>
  <macros><shard>01</shard><replica>r${n}</replica></macros>
  <zookeeper><node><host>127.0.0.1</host><port>${zk_port}</port></node><session_timeout_ms>30000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
  # As scripts/clickhouse.sh: small compressed blocks for the lookups by key (README, "Older
  # ClickHouse"); a modest memory limit, two replicas share the machine.
  cat >"$rdir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage><load_balancing>random</load_balancing><min_compress_block_size>4096</min_compress_block_size><max_compress_block_size>16384</max_compress_block_size></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start_replica() { # replica number
  local n=$1 rdir="$dir/replica$1"
  if replica_ping "$n"; then
    echo "cluster: replica $n already answering on 127.0.0.1:$((http_base + n))" >&2
    return 0
  fi
  write_replica_config "$n"
  echo "cluster: starting replica $n on 127.0.0.1:$((http_base + n)) (state in $rdir)" >&2
  clickhouse-server --config-file="$rdir/config.xml" --pid-file="$rdir/server.pid" --daemon
  wait_ready "cluster replica $n" "$rdir/log/server.err.log" replica_ready "$n"
}

start() {
  if status; then echo "cluster: already answering (ZooKeeper ${zk_port}, replicas $((http_base + 1)), $((http_base + 2)))" >&2; return 0; fi
  install
  start_zookeeper
  for n in "${replicas[@]}"; do start_replica "$n"; done
}

# The replicas first (they hold sessions on ZooKeeper), each given up to 30 s.
stop() {
  for n in "${replicas[@]}"; do stop_pid "$dir/replica$n/server.pid" 30; done
  stop_pid "$dir/zookeeper/zookeeper.pid" 30
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
