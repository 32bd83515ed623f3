#!/usr/bin/env bash
# OpenStack Swift with the s3api middleware and tempauth, on loopback, as a local S3 that VERIFIES
# SigV4 signatures (unlike s3rver). Debian packages: swift swift-proxy swift-account
# swift-container swift-object memcached.
#
#   swift.sh start DIR [PORT] [BUCKET...]  S3 endpoint http://127.0.0.1:PORT; uses PORT+10..PORT+12
#                                          (object/container/account servers) and PORT+20
#                                          (memcached). Creates the buckets (arguments, else
#                                          $CUSTODYFS_BUCKETS, else recepcao-raw storage-unique),
#                                          prints the endpoint URL. Already running: only buckets.
#   swift.sh stop DIR                      stop everything (idempotent); data stays in DIR
#   swift.sh proxy-stop DIR                stop only the proxy (the S3 endpoint): fault tests
#   swift.sh proxy-start DIR               start the proxy again
#   swift.sh status DIR                    exit 0 when the endpoint answers
#
# Access key "test:tester", secret "testing", region us-east-1, path-style.
# Writes /etc/swift/swift.conf (hash prefix/suffix) if it is missing: needs root the first time.
# Env: CUSTODYFS_S3_START_TIMEOUT (default 30 s).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cmd=${1:-}
DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || die "usage: swift.sh start|stop|proxy-stop|proxy-start|status DIR [PORT] [BUCKET...]"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
SD=$DIR/swift
RUN=$SD/run
ETC=$SD/etc
KEY=test:tester
SECRET=testing
TIMEOUT=${CUSTODYFS_S3_START_TIMEOUT:-30}

port_of() { cat "$SD/port" 2>/dev/null || true; }

healthy() { curl -sf -m 2 "http://127.0.0.1:$1/healthcheck" >/dev/null 2>&1; }

# start_server NAME: one swift server in its own session, pid in $RUN/NAME.pid
start_server() {
  local t=$1
  setsid "swift-$t-server" "$ETC/$t-server.conf" </dev/null >>"$RUN/$t.log" 2>&1 &
  echo $! >"$RUN/$t.pid"
}

wait_proxy() {
  local p=$1 i
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    healthy "$p" && return 0
    pid_alive "$RUN/proxy.pid" || break
    sleep 0.1
  done
  tail -n 20 "$RUN/proxy.log" >&2 || true
  return 1
}

write_config() {
  local P=$1 base=$(($1 + 10)) MC=$(($1 + 20)) t port me
  me=$(id -un)
  mkdir -p "$SD/node/d1" "$RUN" "$ETC"
  rm -f "$ETC"/*.builder "$ETC"/*.ring.gz
  rm -rf "$ETC/backups"
  for t in account container object; do
    case $t in account) port=$((base + 2)) ;; container) port=$((base + 1)) ;; object) port=$base ;; esac
    (
      cd "$ETC"
      swift-ring-builder $t.builder create 6 1 1 >/dev/null
      swift-ring-builder $t.builder add "r1z1-127.0.0.1:$port/d1" 100 >/dev/null
      swift-ring-builder $t.builder rebalance >/dev/null || true
    )
    # the object server: a write answers once the container listing has it (no updater runs
    # here: an update that timed out would leave the listing behind for good)
    cat >"$ETC/$t-server.conf" <<C
[DEFAULT]
devices = $SD/node
mount_check = false
bind_ip = 127.0.0.1
bind_port = $port
workers = 1
user = $me
swift_dir = $ETC
log_facility = LOG_LOCAL2
[pipeline:main]
pipeline = $t-server
[app:$t-server]
use = egg:swift#$t
$([ "$t" = object ] && echo "container_update_timeout = 30")
[$t-replicator]
[$t-updater]
[$t-auditor]
C
  done
  cat >"$ETC/proxy-server.conf" <<C
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $P
workers = 1
user = $me
swift_dir = $ETC
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
force_swift_request_proxy_log = false
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $SECRET .admin
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MC
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_object_versioning = true
[filter:symlink]
use = egg:swift#symlink
C
}

stop_all() {
  local t
  for t in proxy account container object; do stop_pidfile "$RUN/$t.pid" 15 & done
  stop_pidfile "$RUN/memcached.pid" 5 &
  wait
}

case $cmd in
start)
  P=${3:-$(port_of)}
  [[ $P =~ ^[0-9]+$ ]] || die "start: PORT required the first time"
  shift 3 2>/dev/null || shift $#
  read -r -a buckets <<<"$(bucket_list "$@")"
  EP=http://127.0.0.1:$P
  if [ -n "$(port_of)" ] && [ "$(port_of)" != "$P" ] && pid_alive "$RUN/proxy.pid"; then
    die "already running in $DIR on port $(port_of), not $P"
  fi
  if pid_alive "$RUN/proxy.pid" && pid_alive "$RUN/object.pid" && healthy "$P"; then
    make_buckets "$EP" "$KEY" "$SECRET" "${buckets[@]}" || die "could not create buckets on $EP"
    echo "$EP"
    exit 0
  fi
  command -v swift-proxy-server >/dev/null ||
    die "swift not installed: apt-get install swift swift-proxy swift-account swift-container swift-object memcached"
  command -v memcached >/dev/null || die "memcached not installed: apt-get install memcached"
  stop_all # whatever half of it may still run
  for p in "$P" $((P + 10)) $((P + 11)) $((P + 12)) $((P + 20)); do
    port_busy "$p" && die "port $p on 127.0.0.1 is already in use (swift uses PORT, PORT+10..12, PORT+20)"
  done
  if [ ! -f /etc/swift/swift.conf ]; then
    mkdir -p /etc/swift 2>/dev/null && printf '[swift-hash]\nswift_hash_path_suffix = custodyacc\nswift_hash_path_prefix = custodyacc\n[storage-policy:0]\nname = gold\ndefault = yes\n' >/etc/swift/swift.conf ||
      die "/etc/swift/swift.conf is missing and cannot be written (run once as root)"
  fi
  mkdir -p "$SD"
  echo "$P" >"$SD/port"
  write_config "$P"
  memcached -u "$(id -un)" -l 127.0.0.1 -p $((P + 20)) -P "$RUN/memcached.pid" -d ||
    die "memcached did not start on port $((P + 20))"
  for t in account container object proxy; do start_server "$t"; done
  if ! wait_proxy "$P"; then
    stop_all
    die "swift did not come up on port $P (logs: $RUN/*.log)"
  fi
  # the proxy answers before the storage servers listen: wait for them too (bounded)
  for p in $((P + 10)) $((P + 11)) $((P + 12)); do
    for ((i = 0; i < TIMEOUT * 10; i++)); do port_busy "$p" && break; sleep 0.1; done
    port_busy "$p" || { stop_all; die "swift storage server on port $p did not come up (logs: $RUN/*.log)"; }
  done
  ok=
  for ((i = 0; i < 10; i++)); do # account autocreate may race the first request
    if make_buckets "$EP" "$KEY" "$SECRET" "${buckets[@]}" 2>"$RUN/mkbucket.err"; then ok=1; break; fi
    sleep 0.5
  done
  [ -n "$ok" ] || { cat "$RUN/mkbucket.err" >&2; die "could not create buckets ${buckets[*]} on $EP"; }
  echo "$EP"
  ;;
stop)
  stop_all
  ;;
proxy-stop)
  stop_pidfile "$RUN/proxy.pid" 15
  ;;
proxy-start)
  P=$(port_of)
  [ -n "$P" ] && [ -f "$ETC/proxy-server.conf" ] || die "no swift set up in $DIR: use start first"
  if ! pid_alive "$RUN/proxy.pid"; then
    port_busy "$P" && die "port $P on 127.0.0.1 is already in use"
    start_server proxy
  fi
  wait_proxy "$P" || { stop_pidfile "$RUN/proxy.pid" 5; die "swift proxy did not come up on port $P"; }
  echo "http://127.0.0.1:$P"
  ;;
status)
  P=$(port_of)
  [ -n "$P" ] && healthy "$P"
  ;;
*)
  die "unknown command '$cmd' (start|stop|proxy-stop|proxy-start|status)"
  ;;
esac
