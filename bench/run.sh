#!/usr/bin/env bash
# bench/run.sh: benchmark `loadbalancer` against nginx and HAProxy on loopback, from a fresh
# machine, in under 15 minutes on 2 cores.
#
# What it does, step by step (one function each, below):
#   1. install_tools      wrk, nginx, HAProxy, curl, openssl from Debian's packages if missing
#   2. build              cargo build --release
#   3. spawn_join_bench   cargo bench --bench spawn_join, if that target exists
#   4. write_configs      three nginx backends, the nginx and HAProxy proxies, our configs (two
#                         modes, and pooled with 10 routes in front); for the HTTPS scenarios an
#                         ECDSA P-256 certificate made with openssl into the temp dir (never
#                         kept) and a TLS variant of each proxy's config (nginx, HAProxy, ours in
#                         both modes) that also listens for HTTPS with it
#   5. start_backends     one nginx process serving three identical backends on loopback
#   6. smoke_test         each target answers 200 with the right body sizes before any load; each
#                         TLS target answers 200 over https, and resumes an OpenSSL client's
#                         session (TLS 1.3 ticket, TLS 1.2 ticket, TLS 1.2 session ID)
#   7. run_scenarios      every scenario against the targets, interleaved, N rounds; a fresh
#                         proxy process per run (so peak RSS is per run). `routed` (pooled with
#                         10 routes) runs in the keep-alive scenarios only. The HTTPS scenarios
#                         (tls_ka50, tls_1mib10, tls_new50) run ours spawn, ours pooled, nginx
#                         and HAProxy terminating TLS (no `direct`: the backends speak plain
#                         HTTP). In a default run (all scenarios) they run one round, not three,
#                         for the 15 minutes: a round of them takes about 70 s, and a default
#                         run with two measured 16m11s (on a machine busy with another
#                         benchmark), so about 15 minutes with one. Named in BENCH_SCENARIOS,
#                         they run BENCH_ROUNDS rounds
#   8. idle_10k           our load balancer's RSS with 10,000 idle keep-alive connections
#   9. pool_sizes         ours at several `workers` counts: RSS and threads at start, ka50 and
#                         ka200 req/s and p99, peak RSS
#  10. write_report       tables on stdout as it goes, and bench/results.md at the end
#
# Tunables (environment): BENCH_ROUNDS (3), BENCH_TLS_ROUNDS (1 with all scenarios, else
# BENCH_ROUNDS), BENCH_DURATION (4 s per measured run), BENCH_WARMUP (1 s), BENCH_PORT_BASE
# (19000), BENCH_SCENARIOS (all; or ids such as "ka50 close50 tls_new50"), BENCH_IDLE_10K (1; 0
# skips it), BENCH_POOL_SIZES ("64 256 1024"; "0" skips it), BENCH_OUT (bench/results.md).
#
# All traffic goes to loopback: 127.0.0.1, and 127.0.1.1-127.0.1.200 as the slow clients' source
# addresses. Every process is started in the background with its pid kept,
# stopped by that pid, and killed by the EXIT trap if still running.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
LIB=$BENCH_DIR/lib

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-4}
WARMUP=${BENCH_WARMUP:-1}
PORT_BASE=${BENCH_PORT_BASE:-19000}
ONLY=${BENCH_SCENARIOS:-all}
# The HTTPS scenarios' rounds: 1 in a run of all scenarios (the plain ones take about 14 of the
# 15 minutes, and a round of the three HTTPS ones takes about 70 s), ROUNDS when scenarios are
# named in BENCH_SCENARIOS; BENCH_TLS_ROUNDS overrides both.
if [[ $ONLY == all ]]; then TLS_ROUNDS=${BENCH_TLS_ROUNDS:-1}; else TLS_ROUNDS=${BENCH_TLS_ROUNDS:-$ROUNDS}; fi
IDLE_10K=${BENCH_IDLE_10K:-1}
POOL_SIZES=${BENCH_POOL_SIZES:-64 256 1024}
OUT=${BENCH_OUT:-$BENCH_DIR/results.md}

WRK_THREADS=2           # wrk's threads: one per core
PROXY_CPUS=2            # nginx worker_processes and HAProxy nbthread: the machine's cores
BACKEND_WORKERS=2       # worker_processes of the backend nginx
LB_WORKERS=256          # our default: requests in progress at once, not CPU parallelism
IDLE_PRESSURE=1000      # idle connections held in the idle-pressure scenario
IDLE_BIG=10000          # idle connections for the RSS check of our load balancer
SLOW_LORIS=1000         # slow-clients scenario: heads trickled a byte every SLOW_INTERVAL
SLOW_UPLOADS=200        #   POST bodies (Content-Length 4096) trickled a few bytes every SLOW_INTERVAL
SLOW_READERS=100        #   GET /1m with a 4 KiB receive buffer, 1 KiB read every SLOW_INTERVAL
SLOW_INTERVAL=2         #   seconds
SLOW_SOURCES=200        #   source addresses 127.0.1.1 ... 127.0.1.200
SLOW_REPLACE_RATE=200   #   most replacements of ended slow clients opened per second
SLOW_PRESSURE=$((SLOW_LORIS + SLOW_UPLOADS + SLOW_READERS))

# Ports: three backends, then one per proxy. `direct` is the first backend itself.
BACKEND_PORTS=($((PORT_BASE + 1)) $((PORT_BASE + 2)) $((PORT_BASE + 3)))
declare -A PORT=([direct]=$((PORT_BASE + 1)) [spawn]=$((PORT_BASE + 81)) [pooled]=$((PORT_BASE + 82))
                 [nginx]=$((PORT_BASE + 83)) [haproxy]=$((PORT_BASE + 84)) [routed]=$((PORT_BASE + 85)))
# HTTPS ports of the TLS configs (which also keep the plain listener on PORT: ours serves its
# metrics there, and all three listen on both, alike).
declare -A TLS_PORT=([spawn]=$((PORT_BASE + 91)) [pooled]=$((PORT_BASE + 92)) [nginx]=$((PORT_BASE + 93))
                     [haproxy]=$((PORT_BASE + 94)))
# `routed` is ours in pooled mode with 10 routes in front of the same pool: a cost check of
# routing beside `pooled`, not a third mode. It runs right after `pooled` in each round, and only
# in ROUTED_SCENARIOS.
TARGETS=(direct spawn pooled routed nginx haproxy)
ROUTED_SCENARIOS="ka10 ka50 ka200"
# The HTTPS scenarios' targets: the three proxies terminating TLS, with plain HTTP to the same
# backends. No `direct` (the backends serve no TLS) and no `routed`.
TLS_TARGETS=(spawn pooled nginx haproxy)

# Scenarios: id | title | unit | connections | path | wrk script | idle connections held |
# slow clients held | scheme (http or https) | goal (ours ÷ the better peer, or empty)
SCENARIOS=(
  "ka10|keep-alive, 10 connections|req/s|10|/|keepalive.lua|0|0|http|"
  "ka50|keep-alive, 50 connections|req/s|50|/|keepalive.lua|0|0|http|"
  "ka200|keep-alive, 200 connections|req/s|200|/|keepalive.lua|0|0|http|"
  "close50|Connection: close, 50 connections|req/s|50|/|close.lua|0|0|http|"
  "large10|1 MiB responses, 10 connections|MiB/s|10|/1m|keepalive.lua|0|0|http|"
  "upload10|64 KiB uploads (POST), 10 connections|req/s|10|/upload|upload.lua|0|0|http|"
  "idle1000|idle pressure: 1,000 idle keep-alive connections + 10 active|req/s|10|/|keepalive.lua|$IDLE_PRESSURE|0|http|"
  "slow1000|slow clients: 1,000 slowloris + 200 slow uploads + 100 slow readers + 10 active|req/s|10|/|keepalive.lua|0|$SLOW_PRESSURE|http|"
  "tls_ka50|HTTPS keep-alive, 50 connections|req/s|50|/|keepalive.lua|0|0|https|"
  "tls_1mib10|HTTPS 1 MiB responses, 10 connections|MiB/s|10|/1m|keepalive.lua|0|0|https|1.0"
  "tls_new50|HTTPS new connections (Connection: close), 50 connections|req/s|50|/|close.lua|0|0|https|0.9"
)

# Every id named in BENCH_SCENARIOS must be one of the above: an unknown one would otherwise run
# nothing and write an empty report.
if [[ $ONLY != all ]]; then
  for wanted in $ONLY; do
    known=0
    for line in "${SCENARIOS[@]}"; do [[ ${line%%|*} == "$wanted" ]] && known=1; done
    ((known)) || { echo "BENCH_SCENARIOS: unknown scenario '$wanted' (known: $(printf '%s ' "${SCENARIOS[@]%%|*}"))" >&2; exit 2; }
  done
  unset wanted known line
fi

START_TIME=$(date +%s)
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)   # was the machine quiet when we began?
WORK=$(mktemp -d -t lb-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers (user nobody when started as root) read files under it
mkdir -p "$WORK/logs" "$WORK/runs" "$WORK/meta"
DATA=$WORK/runs.jsonl
IDLE_DATA=$WORK/idle10k.jsonl
POOL_DATA=$WORK/pool.jsonl
META=$WORK/meta/meta.txt
: >"$DATA"
: >"$IDLE_DATA"
: >"$POOL_DATA"
: >"$META"
CLK_TCK=$(getconf CLK_TCK)
NGINX=nginx
LB=$REPO_DIR/target/release/loadbalancer

PIDS=()        # every background process this script started and has not yet stopped
LAST_PID=      # set by start_bg

# ---------------------------------------------------------------------------------------------
# Process handling: start in the background, remember the pid, stop by pid.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# start_bg NAME OUTFILE CMD...: run CMD in the background, stdout+stderr to OUTFILE.
start_bg() {
  local name=$1 out=$2
  shift 2
  "$@" >"$out" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  echo "$name $LAST_PID" >>"$WORK/logs/pids"
}

forget_pid() {
  local pid=$1 kept=() p
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]+"${kept[@]}"}")
}

alive() { kill -0 "$1" 2>/dev/null; }

# stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL; children (nginx workers) too.
stop_pid() {
  local pid=$1 children i
  children=$(pgrep -P "$pid" 2>/dev/null || true)
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for i in $children; do alive "$i" && kill -KILL "$i" 2>/dev/null || true; done
  forget_pid "$pid"
}

# On exit (normal, error or Ctrl-C): stop everything still running, remove the temp dir.
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_port PORT PID: until 127.0.0.1:PORT accepts (5 s at most) while PID lives.
wait_port() {
  local port=$1 pid=${2:-} i
  for ((i = 0; i < 250; i++)); do
    if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
    if [[ -n $pid ]] && ! alive "$pid"; then return 1; fi
    sleep 0.02
  done
  return 1
}

port_in_use() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

# pids_of_tree PID: the process and its direct children (nginx: master and workers).
pids_of_tree() { echo "$1" $(pgrep -P "$1" 2>/dev/null || true); }

# cpu_ticks PID...: utime + stime of the processes (all their threads, live and exited).
cpu_ticks() {
  local total=0 p s f
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

# peak_rss_kib PID...: the sum of VmHWM (peak resident set) of the processes, in KiB.
peak_rss_kib() {
  local total=0 p v
  for p in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# ---------------------------------------------------------------------------------------------
# 1. Tools

install_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v pgrep >/dev/null || missing+=(procps)
  if ((${#missing[@]})); then
    log "installing from Debian's packages: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
  command -v cargo >/dev/null || { echo "cargo is needed (Rust toolchain)" >&2; exit 1; }
}

# ---------------------------------------------------------------------------------------------
# 2. Build

build() {
  log "cargo build --release"
  (cd "$REPO_DIR" && cargo build --release --quiet)
  [[ -x $LB ]] || { echo "no $LB after the build" >&2; exit 1; }
}

# 3. The spawn+join micro-benchmark of the other contributor's bench target, if it is there.
spawn_join_bench() {
  local out=$WORK/meta/spawn_join.md lines
  log "cargo bench --bench spawn_join"
  lines=$(cd "$REPO_DIR" && cargo bench --bench spawn_join 2>/dev/null | grep -E 'spawn\+join|hand-off' || true)
  if [[ -n $lines ]]; then
    { echo "\`cargo bench --bench spawn_join\` (run before the load tests start):"
      echo
      echo '```text'
      echo "$lines"
      echo '```'; } >"$out"
  else
    echo "The \`spawn_join\` bench target is missing (or printed no \`spawn+join\` line): not measured." >"$out"
  fi
  echo "$lines" | sed 's/^/    /'
  printf 'spawn_join\t@%s\n' "$out" >>"$META"
}

# ---------------------------------------------------------------------------------------------
# 4. Configurations

write_configs() {
  local www=$WORK/www p
  mkdir -p "$www" "$WORK/nginx-backend" "$WORK/nginx-proxy"
  head -c $((1024 * 1024)) /dev/zero | tr '\0' 'x' >"$www/1m"   # the 1 MiB file
  BODY64=$(printf 'x%.0s' $(seq 63))                            # 63 bytes + newline = 64
  chmod -R a+rX "$www"

  # The backends: one nginx, three server blocks, each serving a 64-byte body at /, a 1 MiB
  # file at /1m and a small 200 for uploads at /upload (nginx reads and discards the body).
  {
    cat <<EOF
worker_processes $BACKEND_WORKERS;
worker_rlimit_nofile 20000;
pid $WORK/nginx-backend/nginx.pid;
error_log $WORK/nginx-backend/error.log warn;
events { worker_connections 9000; }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 1m;
    client_body_buffer_size 128k;
    client_body_temp_path $WORK/nginx-backend/body;
    proxy_temp_path $WORK/nginx-backend/proxy;
    fastcgi_temp_path $WORK/nginx-backend/fastcgi;
    uwsgi_temp_path $WORK/nginx-backend/uwsgi;
    scgi_temp_path $WORK/nginx-backend/scgi;
EOF
    for p in "${BACKEND_PORTS[@]}"; do
      cat <<EOF
    server {
        listen 127.0.0.1:$p;
        root $www;
        location / { return 200 "$BODY64\n"; }
        location = /1m { }
        location = /upload { return 200 "ok\n"; }
    }
EOF
    done
    echo "}"
  } >"$WORK/nginx-backend/nginx.conf"

  # nginx and HAProxy as proxies (write_nginx_proxy_config, write_haproxy_config); their TLS
  # variants are the same plus an HTTPS listener with one certificate for all three proxies, made
  # now, in the temp dir.
  write_nginx_proxy_config "$WORK/nginx-proxy" ""
  write_haproxy_config "$WORK/haproxy.cfg" ""
  make_certificate
  write_nginx_proxy_config "$WORK/nginx-proxy-tls" "
        listen 127.0.0.1:${TLS_PORT[nginx]} ssl;
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;"
  write_haproxy_config "$WORK/haproxy-tls.cfg" \
    "    bind 127.0.0.1:${TLS_PORT[haproxy]} ssl crt $TLS_DIR/cert-and-key.pem alpn http/1.1 ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3
"

  # Ours, one config per pairThreads mode (and, for pool_sizes, per workers count).
  local mode n
  for mode in spawn pooled; do
    write_lb_config "$mode" "$LB_WORKERS" "$WORK/lb-$mode.json"
    write_lb_config "$mode" "$LB_WORKERS" "$WORK/lb-$mode-tls.json" "$mode" \
      "  \"tlsListen\": \"127.0.0.1:${TLS_PORT[$mode]}\",
  \"certificates\": [{\"certFile\": \"$TLS_DIR/cert.pem\", \"keyFile\": \"$TLS_DIR/key.pem\"}],
"
    for n in $POOL_SIZES; do
      [[ $n == 0 ]] || write_lb_config "$mode" "$n" "$WORK/lb-$mode-w$n.json"
    done
  done
  write_lb_routed_config "$WORK/lb-routed.json"

  "$NGINX" -t -q -e "$WORK/nginx-backend/error.log" -p "$WORK/nginx-backend/" -c "$WORK/nginx-backend/nginx.conf"
  "$NGINX" -t -q -e "$WORK/nginx-proxy/error.log" -p "$WORK/nginx-proxy/" -c "$WORK/nginx-proxy/nginx.conf"
  "$NGINX" -t -q -e "$WORK/nginx-proxy-tls/error.log" -p "$WORK/nginx-proxy-tls/" -c "$WORK/nginx-proxy-tls/nginx.conf"
  "$HAPROXY" -c -q -f "$WORK/haproxy.cfg"
  "$HAPROXY" -c -q -f "$WORK/haproxy-tls.cfg"
}

# make_certificate: a self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, and its
# key, in TLS_DIR under the temp dir (removed with it at exit, never kept). nginx and ours read
# the two PEM files, HAProxy the two in one file.
TLS_DIR=
make_certificate() {
  TLS_DIR=$WORK/tls
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$WORK/logs/openssl-req.log" 2>&1 \
    || { cat "$WORK/logs/openssl-req.log" >&2; exit 1; }
  cat "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" >"$TLS_DIR/cert-and-key.pem"
}

# write_nginx_proxy_config DIR TLS: nginx as a proxy, 2 worker processes, an upstream pool with
# keepalive, its files under DIR; TLS is more lines for the server block (an HTTPS listener and
# its settings), or empty.
write_nginx_proxy_config() {
  local dir=$1 tls=$2
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
worker_processes $PROXY_CPUS;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 9000; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 1m;
    client_body_buffer_size 128k;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream backends {
        server 127.0.0.1:${BACKEND_PORTS[0]};
        server 127.0.0.1:${BACKEND_PORTS[1]};
        server 127.0.0.1:${BACKEND_PORTS[2]};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]};$tls
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# write_haproxy_config FILE TLS: HAProxy, 2 threads, round robin over the same three backends;
# TLS is a second `bind` line (HTTPS) for the frontend, or empty. With TLS, also a stats socket,
# for each run's handshake counters (full and reused), and `tune.ssl.cachesize` written out at
# its default (20,000 sessions); tickets are on by default.
write_haproxy_config() {
  local file=$1 tls=$2 global_tls=
  [[ -z $tls ]] || global_tls="    tune.ssl.cachesize 20000
    stats socket $WORK/haproxy-tls.sock mode 600 level operator
"
  cat >"$file" <<EOF
global
    nbthread $PROXY_CPUS
    maxconn 9000
${global_tls}
defaults
    mode http
    maxconn 9000
    timeout connect 3s
    timeout client 75s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 75s

frontend bench
    bind 127.0.0.1:${PORT[haproxy]}
${tls}    default_backend backends

backend backends
    balance roundrobin
    server b1 127.0.0.1:${BACKEND_PORTS[0]}
    server b2 127.0.0.1:${BACKEND_PORTS[1]}
    server b3 127.0.0.1:${BACKEND_PORTS[2]}
EOF
}

# write_lb_config MODE WORKERS FILE: our config. idleTimeout is raised from 5 s to nginx's 75 s
# so the idle connections of the idle scenarios outlive a run, as they do with the peers.
# maxConnectionsPerClient is off, as the peers have no such cap: wrk opens up to 200 connections
# from the one address 127.0.0.1, and a warm-up's connections may still be closing when the
# measured run opens its own. The other slow-client settings (headerReadTimeout,
# bodyReadTimeout, the minimum rates) keep their defaults; the slow1000 attackers come from 200
# addresses, a handful each, which the default cap would not touch either.
#
# write_lb_config MODE WORKERS FILE TARGET EXTRA: the same for TARGET's port, with EXTRA (more
# top-level keys, each line ending in a comma) before `servers`.
write_lb_config() {
  local mode=$1 workers=$2 file=$3 target=${4:-$1} extra=${5:-}
  cat >"$file" <<EOF
{
  "listenPort": "127.0.0.1:${PORT[$target]}",
  "algorithm": "round_robin",
  "workers": $workers,
  "pairThreads": "$mode",
  "maxConnections": 15000,
  "maxConnectionsPerClient": 0,
  "healthCheckInterval": "10s",
  "idleTimeout": "75s",
${extra}  "servers": [
    "http://127.0.0.1:${BACKEND_PORTS[0]}",
    "http://127.0.0.1:${BACKEND_PORTS[1]}",
    "http://127.0.0.1:${BACKEND_PORTS[2]}"
  ]
}
EOF
}

# write_lb_routed_config FILE: the pooled config, plus three small pools over the same three
# backends (a server may be in several pools) and 10 routes in front of pool `default` (the
# top-level `servers`). wrk's `GET /` with `Host: 127.0.0.1:PORT` fails the first nine, each
# on a different kind of condition (an exact host, a `*.` host, a list of hosts, a path prefix,
# an exact path, a method and header fields), and is taken by the tenth, `site`, which sends it to
# `default` with no header edits and no prefix stripped: what differs from `pooled` is the walk
# down the list. The smoke test asks for a few of the other routes too.
write_lb_routed_config() {
  local file=$1 b1="http://127.0.0.1:${BACKEND_PORTS[0]}" b2="http://127.0.0.1:${BACKEND_PORTS[1]}"
  local b3="http://127.0.0.1:${BACKEND_PORTS[2]}" extra
  extra=$(cat <<EOF
  "pools": {
    "api": {"algorithm": "least_conn", "servers": ["$b1", "$b2"]},
    "static": {"servers": ["$b3"]},
    "admin": {"servers": ["$b2"], "maxRetries": 0}
  },
  "routes": [
    {"name": "old-host", "match": {"host": "old.example.com"},
     "redirect": {"location": "https://www.example.com{path}{query}", "status": 301}},
    {"name": "api", "match": {"host": "api.example.com"}, "pool": "api",
     "requestHeaders": {"set": {"X-Api-Gateway": "lb"}}},
    {"name": "static", "match": {"host": "*.static.example.com"}, "pool": "static",
     "responseHeaders": {"set": {"Cache-Control": "public, max-age=3600"}}},
    {"name": "shop", "match": {"host": ["shop.example.com", "www.shop.example.com", "*.shop.example.org"]},
     "pool": "static"},
    {"name": "api-v1", "match": {"pathPrefix": "/v1"}, "pool": "api", "stripPrefix": true},
    {"name": "admin", "match": {"pathPrefix": "/admin/", "methods": ["GET", "POST"]}, "pool": "admin",
     "requestHeaders": {"remove": ["X-Debug"]}},
    {"name": "webhooks", "match": {"methods": ["POST"],
                                   "headers": {"Content-Type": "application/json", "X-Hook-Signature": true}},
     "pool": "api"},
    {"name": "ping", "match": {"path": "/lb-ping", "methods": ["GET", "HEAD"]},
     "respond": {"status": 200, "body": "ok\\n"}},
    {"name": "internal", "match": {"pathPrefix": "/internal/"},
     "respond": {"status": 403, "body": "forbidden\\n"}},
    {"name": "site", "match": {"pathPrefix": "/"}, "pool": "default"}
  ],
EOF
)
  write_lb_config pooled "$LB_WORKERS" "$file" routed "$extra
"
}

# ---------------------------------------------------------------------------------------------
# 5. Backends and proxies

BACKEND_PID=
start_backends() {
  local p
  for p in "${BACKEND_PORTS[@]}" "${PORT[spawn]}" "${PORT[pooled]}" "${PORT[routed]}" "${PORT[nginx]}" \
    "${PORT[haproxy]}" "${TLS_PORT[@]}"; do
    if port_in_use "$p"; then
      echo "port $p on 127.0.0.1 is already in use: set BENCH_PORT_BASE to a free range" >&2
      exit 1
    fi
  done
  start_bg backend "$WORK/logs/backend.log" "$NGINX" -e "$WORK/nginx-backend/error.log" \
    -p "$WORK/nginx-backend/" -c "$WORK/nginx-backend/nginx.conf" -g 'daemon off;'
  BACKEND_PID=$LAST_PID
  for p in "${BACKEND_PORTS[@]}"; do
    wait_port "$p" "$BACKEND_PID" || { cat "$WORK/logs/backend.log" >&2; exit 1; }
  done
  log "backends: nginx pid $BACKEND_PID, $BACKEND_WORKERS workers, ports ${BACKEND_PORTS[*]}"
}

PROXY_PID=
# SCHEME: http, or https while the HTTPS scenarios (and their smoke test) run: start_target then
# starts each proxy with its TLS config and waits for its HTTPS port, and log_problems reads that
# config's log.
SCHEME=http

# target_port TARGET: the port wrk is sent to, for the current SCHEME.
target_port() {
  if [[ $SCHEME == https ]]; then echo "${TLS_PORT[$1]}"; else echo "${PORT[$1]}"; fi
}

# nginx_dir: the nginx proxy's directory (config, error log) for the current SCHEME.
nginx_dir() {
  if [[ $SCHEME == https ]]; then echo "$WORK/nginx-proxy-tls"; else echo "$WORK/nginx-proxy"; fi
}

# start_target TARGET [CONFIG]: a fresh proxy process (nothing for `direct`); sets PROXY_PID.
# CONFIG is one of our configs other than the target's usual one (pool_sizes).
start_target() {
  local target=$1 log=$WORK/logs/$1.log dir tls=
  PROXY_PID=
  [[ $SCHEME == https ]] && tls=-tls
  case $target in
    direct) return 0 ;;
    spawn | pooled | routed)
      start_bg "$target" "$log" env RUST_LOG=warn "$LB" --config "${2:-$WORK/lb-$target$tls.json}" ;;
    nginx)
      dir=$(nginx_dir)
      : >"$dir/error.log"   # per run, so its warnings can be counted
      start_bg nginx "$log" "$NGINX" -e "$dir/error.log" -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' ;;
    haproxy)
      start_bg haproxy "$log" "$HAPROXY" -db -f "$WORK/haproxy$tls.cfg" ;;
  esac
  PROXY_PID=$LAST_PID
  if ! wait_port "$(target_port "$target")" "$PROXY_PID"; then
    echo "$target did not start listening; its log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
  # nginx forks its workers after it listens: give them a moment to exist.
  [[ $target == nginx ]] && sleep 0.2
  return 0
}

stop_target() {
  [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
  PROXY_PID=
}

# log_problems TARGET: "COUNT<TAB>first line" of the warnings and errors the proxy logged in its
# last run (ours: WARN/ERROR at RUST_LOG=warn; nginx: its error log; HAProxy: its stderr).
log_problems() {
  local target=$1 file pattern lines
  case $target in
    spawn | pooled | routed) file=$WORK/logs/$target.log pattern=' (WARN|ERROR) ' ;;
    nginx) file=$(nginx_dir)/error.log pattern='\[(warn|error|crit|alert|emerg)\]' ;;
    haproxy) file=$WORK/logs/haproxy.log pattern='\[(WARNING|ALERT)\]' ;;
    *) printf '0\t\n'; return 0 ;;
  esac
  lines=$(grep -E "$pattern" "$file" 2>/dev/null || true)
  if [[ -z $lines ]]; then printf '0\t\n'; return 0; fi
  printf '%s\t%s\n' "$(wc -l <<<"$lines")" "$(head -1 <<<"$lines" | cut -c1-160)"
}

# tls_handshakes TARGET: "FULL RESUMED FAILED", the TLS handshakes the running proxy has counted
# on its HTTPS listener so far, or "" where it has no such counters (nginx). Ours: its Prometheus
# metrics on the plain listener (`lb_tls_handshakes_total` by kind, and the sum of
# `lb_tls_handshake_failures_total`). HAProxy: `show stat` on the TLS config's stats socket, the
# frontend's `ssl_sess` (new sessions: full handshakes), `ssl_reused_sess` and
# `ssl_failed_handshake`.
tls_handshakes() {
  case $1 in
    spawn | pooled)
      curl -s --max-time 3 "http://127.0.0.1:${PORT[$1]}/lb-metrics/prometheus" 2>/dev/null | awk '
        /^lb_tls_handshakes_total\{kind="full"\}/ {full = $2}
        /^lb_tls_handshakes_total\{kind="resumed"\}/ {resumed = $2}
        /^lb_tls_handshake_failures_total\{/ {failed += $2}
        END {if (full != "") printf "%d %d %d\n", full, resumed, failed}' ;;
    haproxy)
      python3 - "$WORK/haproxy-tls.sock" <<'PY' 2>/dev/null || true
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
lines = out.decode().splitlines()
head = lines[0].lstrip("# ").split(",")
for line in lines[1:]:
    row = dict(zip(head, line.split(",")))
    if row.get("pxname") == "bench" and row.get("svname") == "FRONTEND":
        print(row.get("ssl_sess") or 0, row.get("ssl_reused_sess") or 0, row.get("ssl_failed_handshake") or 0)
PY
      ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# 6. Smoke test: every target answers each scenario's path correctly before we load it.

smoke_test() {
  local target port got expect
  for target in "${TARGETS[@]}"; do
    start_target "$target" || exit 1
    port=${PORT[$target]}
    for expect in "/ 200 64" "/1m 200 1048576" "POST/upload 200 3"; do
      read -r path code size <<<"$expect"
      if [[ $path == POST* ]]; then
        got=$(head -c 65536 /dev/zero | curl -s -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' \
          -X POST -H 'Content-Type: application/octet-stream' --data-binary @- "http://127.0.0.1:$port${path#POST}")
      else
        got=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' "http://127.0.0.1:$port$path")
      fi
      if [[ $got != "$code $size" ]]; then
        echo "smoke test: $target $path answered '$got', expected '$code $size'" >&2
        exit 1
      fi
    done
    [[ $target == routed ]] && smoke_routes "$port"
    stop_target
  done
  log "smoke test passed: every target answers /, /1m and POST /upload as expected"
  smoke_tls
}

# smoke_tls: each TLS target, with its TLS config, answers / and /1m over https (curl), and
# resumes an OpenSSL client's session three ways: a TLS 1.3 ticket, a TLS 1.2 ticket, a TLS 1.2
# session ID (the client sends no ticket); `openssl s_client` twice each, -sess_out then -sess_in,
# the second one's answer must say "Reused" and carry a 200. What was negotiated (protocol,
# cipher, key exchange group, signature) goes to the report.
smoke_tls() {
  local target port got expect path code size how flags first second out=$WORK/meta/tls_smoke.md
  local req=$'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' row negotiated
  SCHEME=https
  if ! getent ahosts localhost | grep -q '^127\.0\.0\.1 '; then
    echo "smoke test: the HTTPS scenarios send wrk to https://localhost:PORT, and localhost does not resolve to 127.0.0.1 here" >&2
    exit 1
  fi
  {
    echo "| target | / and /1m over https | TLS 1.3 ticket | TLS 1.2 ticket | TLS 1.2 session ID | negotiated by \`openssl s_client\` (TLS 1.3) |"
    echo "| --- | --- | --- | --- | --- | --- |"
  } >"$out"
  for target in "${TLS_TARGETS[@]}"; do
    start_target "$target" || exit 1
    port=$(target_port "$target")
    for expect in "/ 200 64" "/1m 200 1048576"; do
      read -r path code size <<<"$expect"
      got=$(curl -sk -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' "https://localhost:$port$path")
      if [[ $got != "$code $size" ]]; then
        echo "smoke test: $target https $path answered '$got', expected '$code $size'" >&2
        exit 1
      fi
    done
    row="| $(target_label "$target") | 200, 200 |"
    negotiated=
    for how in "TLS 1.3 ticket:-tls1_3" "TLS 1.2 ticket:-tls1_2" "TLS 1.2 session ID:-tls1_2 -no_ticket"; do
      flags=${how#*:}
      # shellcheck disable=SC2086  # flags are several words on purpose
      first=$(printf '%s' "$req" | timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
        $flags -sess_out "$WORK/tls/session" -ign_eof 2>&1 || true)
      # shellcheck disable=SC2086
      second=$(printf '%s' "$req" | timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
        $flags -sess_in "$WORK/tls/session" -ign_eof 2>&1 || true)
      rm -f "$WORK/tls/session"
      if ! grep -q '^New, TLSv1' <<<"$first" || ! grep -q 'HTTP/1.1 200' <<<"$first"; then
        echo "smoke test: $target over https (${how%%:*}) did not answer a first handshake and request:" >&2
        grep -E '^(New|Reused),|error|alert|HTTP/' <<<"$first" | head -5 >&2
        exit 1
      fi
      if ! grep -q '^Reused, TLSv1' <<<"$second" || ! grep -q 'HTTP/1.1 200' <<<"$second"; then
        echo "smoke test: $target over https did not resume a session (${how%%:*}):" >&2
        grep -E '^(New|Reused),|error|alert|HTTP/' <<<"$second" | head -5 >&2
        exit 1
      fi
      row+=" resumed |"
      [[ -n $negotiated ]] || negotiated=$(awk -F': ' '
        /^New, / {sub(/^New, /, ""); sub(/, Cipher is /, ", "); p = $0}
        /^Server Temp Key:/ {k = $2}
        /^Peer signature type:/ {g = $2}
        END {printf "%s, %s, %s signature", p, k, g}' <<<"$first")
    done
    echo "$row $negotiated |" >>"$out"
    stop_target
  done
  SCHEME=http
  printf 'tls_smoke\t@%s\n' "$out" >>"$META"
  log "smoke test passed: every TLS target answers / and /1m over https and resumes sessions (TLS 1.3 and 1.2)"
}

# target_label TARGET: the report's name for a target.
target_label() {
  case $1 in
    spawn) echo "loadbalancer, pairThreads spawn" ;;
    pooled) echo "loadbalancer, pairThreads pooled" ;;
    nginx) echo "nginx" ;;
    haproxy) echo "HAProxy" ;;
    *) echo "$1" ;;
  esac
}

# smoke_routes PORT: the routed config's other routes answer as written (so its routes are the
# ones loaded, and wrk's requests reach `site` only after the nine others).
smoke_routes() {
  local port=$1 check host path expect got
  for check in "old.example.com /a?b=1 301 https://www.example.com/a?b=1" "127.0.0.1 /lb-ping 200 3" \
    "127.0.0.1 /internal/x 403 10" "api.example.com / 200 64" "a.static.example.com / 200 64" \
    "127.0.0.1 /v1 200 64"; do
    read -r host path expect <<<"$check"
    got=$(curl -s -o /dev/null --max-time 5 -H "Host: $host" -w '%{http_code} %{size_download} %{redirect_url}' \
      "http://127.0.0.1:$port$path")
    got=${got% }
    case $expect in
      301*) got="${got%% *} ${got##* }" ;;   # status and Location
    esac
    if [[ $got != "$expect" ]]; then
      echo "smoke test: routed, Host $host, $path answered '$got', expected '$expect'" >&2
      exit 1
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# 7. One measured run, and the scenario loop

# run_one SCENARIO-FIELDS... TARGET ROUND (a proxy that fails to start is recorded with wrk-rc 99).
# The scheme field picks the proxy's config, its port and the URL (SCHEME, set by run_scenarios).
run_one() {
  local id=$1 title=$2 unit=$3 conns=$4 path=$5 script=$6 idle=$7 slow=$8 scheme=$9 goal=${10}
  local target=${11} round=${12}
  local port tag="$id-$target-r$round" host=127.0.0.1
  port=$(target_port "$target")
  # Over https, the name `localhost` (smoke_tls checks that it resolves to 127.0.0.1; wrk and
  # curl go on to the next address if one refuses, ::1 say): wrk sends its URL's host as SNI, and
  # an IP address there is not allowed (RFC 6066), which rustls logs as a warning on every
  # handshake and the peers ignore.
  [[ $scheme == https ]] && host=localhost
  local url="$scheme://$host:$port$path" lua=$WORK/$script
  local wrk_out=$WORK/runs/$tag.wrk idle_out= idle_pid= probe_pid= probe_out=$WORK/runs/$tag.probe
  local slow_out= slow_pid= hs0= hs1=
  local wrk_rc=0 rss=0 alive_flag=1 t0 t1 b0 b1 pids i

  if ! start_target "$target"; then
    python3 "$LIB/report.py" record --data "$DATA" --wrk-out /dev/null --wrk-rc 99 --scenario "$id" \
      --title "$title" --unit "$unit" --round "$round" --target "$target" --alive 0 \
      --scheme "$scheme" --goal "$goal"
    stop_target
    return 0
  fi

  # Idle pressure: open the idle connections (one request each), wait until all are idle.
  if ((idle > 0)); then
    idle_out=$WORK/runs/$tag.idle
    start_bg idle "$idle_out" python3 "$LIB/idle_conns.py" --port "$port" --count "$idle" --recheck
    idle_pid=$LAST_PID
    for ((i = 0; i < 600; i++)); do
      grep -q '"event": "ready"' "$idle_out" 2>/dev/null && break
      alive "$idle_pid" || break
      sleep 0.1
    done
  fi

  # Slow clients: open them all (their first bytes sent), then keep them trickling, replacing
  # each one the target ends, until they are stopped after the run.
  if ((slow > 0)); then
    slow_out=$WORK/runs/$tag.slow
    start_bg slow "$slow_out" python3 "$LIB/slow_clients.py" --port "$port" \
      --duration $((WARMUP + DURATION + 120)) --slowloris "$SLOW_LORIS" --uploads "$SLOW_UPLOADS" \
      --readers "$SLOW_READERS" --sources "$SLOW_SOURCES" --interval "$SLOW_INTERVAL" \
      --replace-rate "$SLOW_REPLACE_RATE"
    slow_pid=$LAST_PID
    for ((i = 0; i < 600; i++)); do
      grep -q '"event": "ready"' "$slow_out" 2>/dev/null && break
      alive "$slow_pid" || break
      sleep 0.1
    done
  fi

  # Warm-up, then the measured run with CPU ticks taken around it and a probe request made
  # halfway through on a fresh connection (a pool that starves connections shows up there).
  timeout $((WARMUP + 15)) wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" --timeout 3s -s "$lua" "$url" \
    >"$WORK/runs/$tag.warmup" 2>&1 || true
  # HTTPS: the proxy's handshake counters around the measured run (ours and HAProxy).
  [[ $scheme == https ]] && hs0=$(tls_handshakes "$target")
  pids=$( [[ -n $PROXY_PID ]] && pids_of_tree "$PROXY_PID" || true)
  t0=$( [[ -n $pids ]] && cpu_ticks $pids || echo -1)
  b0=$(cpu_ticks $(pids_of_tree "$BACKEND_PID"))
  start_bg probe "$probe_out" bash -c "sleep $(( (DURATION + 1) / 2 )); curl -sk -o /dev/null --max-time 3 -w '%{http_code} %{time_total}' '$url'"
  probe_pid=$LAST_PID
  timeout $((DURATION + 15)) wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout 3s --latency -s "$lua" "$url" \
    >"$wrk_out" 2>&1 || wrk_rc=$?
  b1=$(cpu_ticks $(pids_of_tree "$BACKEND_PID"))
  if [[ -n $PROXY_PID ]]; then
    pids=$(pids_of_tree "$PROXY_PID")
    t1=$(cpu_ticks $pids)
    rss=$(peak_rss_kib $pids)
    alive "$PROXY_PID" || alive_flag=0
    [[ $scheme == https ]] && hs1=$(tls_handshakes "$target")
  else
    t0=0 t1=-1
  fi
  wait "$probe_pid" 2>/dev/null || true
  forget_pid "$probe_pid"

  # Idle pressure: are the idle connections still open, and still answered?
  if [[ -n $idle_pid ]]; then
    alive "$idle_pid" && kill -USR1 "$idle_pid"
    for ((i = 0; i < 600; i++)); do alive "$idle_pid" || break; sleep 0.1; done
    stop_pid "$idle_pid"
  fi
  # Slow clients: SIGTERM makes them close everything and print their counts.
  if [[ -n $slow_pid ]]; then stop_pid "$slow_pid"; fi
  stop_target

  python3 "$LIB/report.py" record --data "$DATA" --wrk-out "$wrk_out" --wrk-rc "$wrk_rc" \
    --log-problems "$(log_problems "$target")" --scenario "$id" --title "$title" --unit "$unit" --round "$round" --target "$target" \
    --rss-kib "$rss" --proxy-ticks $((t1 - t0)) --backend-ticks $((b1 - b0)) --clk-tck "$CLK_TCK" \
    --probe "$(cat "$probe_out" 2>/dev/null || true)" --alive "$alive_flag" \
    ${idle_out:+--idle-out "$idle_out"} --idle-count "$idle" \
    ${slow_out:+--slow-out "$slow_out"} --slow-count "$slow" \
    --scheme "$scheme" --goal "$goal" --handshakes-before "$hs0" --handshakes-after "$hs1"
}

run_scenarios() {
  local line id title unit conns path script idle slow scheme goal round target rounds targets
  for line in "${SCENARIOS[@]}"; do
    IFS='|' read -r id title unit conns path script idle slow scheme goal <<<"$line"
    [[ $ONLY == all || " $ONLY " == *" $id "* ]] || continue
    cat "$LIB/wrk/$script" "$LIB/wrk/done.lua" >"$WORK/$script"
    SCHEME=$scheme
    if [[ $scheme == https ]]; then
      rounds=$TLS_ROUNDS targets=("${TLS_TARGETS[@]}")
    else
      rounds=$ROUNDS targets=("${TARGETS[@]}")
    fi
    log "scenario $id: $title ($rounds rounds of ${WARMUP}s warm-up + ${DURATION}s)"
    for ((round = 1; round <= rounds; round++)); do
      for target in "${targets[@]}"; do
        [[ $target != routed || " $ROUTED_SCENARIOS " == *" $id "* ]] || continue
        run_one "$id" "$title" "$unit" "$conns" "$path" "$script" "$idle" "$slow" "$scheme" "$goal" \
          "$target" "$round"
      done
    done
    SCHEME=http
    echo
    python3 "$LIB/report.py" table --data "$DATA" --scenario "$id"
    echo
  done
}

# ---------------------------------------------------------------------------------------------
# 8. Our load balancer with 10,000 idle keep-alive connections: RSS (the target is < 200 MiB).

idle_10k() {
  [[ $IDLE_10K == 1 ]] || return 0
  local mode out idle_pid i rss hwm threads
  log "10,000 idle keep-alive connections, our load balancer only"
  for mode in spawn pooled; do
    out=$WORK/runs/idle10k-$mode.idle
    start_target "$mode" || continue
    start_bg idle "$out" python3 "$LIB/idle_conns.py" --port "${PORT[$mode]}" --count "$IDLE_BIG" --recheck
    idle_pid=$LAST_PID
    for ((i = 0; i < 900; i++)); do
      grep -q '"event": "ready"' "$out" 2>/dev/null && break
      alive "$idle_pid" || break
      sleep 0.1
    done
    sleep 1   # let the workers go back to waiting
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PROXY_PID/status" 2>/dev/null || echo 0)
    hwm=$(peak_rss_kib "$PROXY_PID")
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$PROXY_PID/status" 2>/dev/null || echo "")
    alive "$idle_pid" && kill -USR1 "$idle_pid"
    for ((i = 0; i < 900; i++)); do alive "$idle_pid" || break; sleep 0.1; done
    stop_pid "$idle_pid"
    stop_target
    python3 "$LIB/report.py" idle --data "$IDLE_DATA" --record "$mode" "$IDLE_BIG" "${rss:-0}" "${hwm:-0}" "$threads" "$out"
  done
  echo
  python3 "$LIB/report.py" idle --data "$IDLE_DATA"
  echo
}

# ---------------------------------------------------------------------------------------------
# 9. Ours at several pool sizes: a fresh process per mode and `workers` count, its RSS and
# threads once it serves, ka50 then ka200 (warm-up and one measured run each), peak RSS after each.

# pool_wrk CONNS PORT OUT: one warm-up and one measured keep-alive run of GET /.
pool_wrk() {
  local conns=$1 port=$2 out=$3
  timeout $((WARMUP + 15)) wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" --timeout 3s -s "$WORK/keepalive.lua" \
    "http://127.0.0.1:$port/" >"$out.warmup" 2>&1 || true
  timeout $((DURATION + 15)) wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --timeout 3s --latency \
    -s "$WORK/keepalive.lua" "http://127.0.0.1:$port/" >"$out" 2>&1 || true
}

pool_sizes() {
  [[ $POOL_SIZES != 0 ]] || return 0
  local mode n port out rss threads hwm50 hwm200 alive_flag
  log "pool sizes: workers $POOL_SIZES, our load balancer only"
  cat "$LIB/wrk/keepalive.lua" "$LIB/wrk/done.lua" >"$WORK/keepalive.lua"
  for mode in spawn pooled; do
    for n in $POOL_SIZES; do
      port=${PORT[$mode]} out=$WORK/runs/pool-$mode-w$n
      start_target "$mode" "$WORK/lb-$mode-w$n.json" || { stop_target; continue; }
      # The acceptor starts after every worker (and pair): one answered request means all are up.
      curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port/" || true
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PROXY_PID/status" 2>/dev/null || echo 0)
      threads=$(awk '/^Threads:/ {print $2}' "/proc/$PROXY_PID/status" 2>/dev/null || echo "")
      pool_wrk 50 "$port" "$out.ka50"
      hwm50=$(peak_rss_kib "$PROXY_PID")
      pool_wrk 200 "$port" "$out.ka200"
      hwm200=$(peak_rss_kib "$PROXY_PID")
      alive_flag=1
      alive "$PROXY_PID" || alive_flag=0
      stop_target
      python3 "$LIB/report.py" pool --data "$POOL_DATA" --record "$mode" "$n" "$threads" "${rss:-0}" \
        "${hwm50:-0}" "${hwm200:-0}" "$out.ka50" "$out.ka200" "$alive_flag" "$(log_problems "$mode")"
      log "  $mode, $n workers: done"
    done
  done
  echo
  python3 "$LIB/report.py" pool --data "$POOL_DATA"
  echo
}

# ---------------------------------------------------------------------------------------------
# 10. Report: the machine, the versions, the method, then every table.

describe_machine() {
  local commit dirty
  commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git -C "$REPO_DIR" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null | awk '{print $2}' | paste -sd, - || true)
  [[ -n $dirty ]] && commit="$commit (plus uncommitted changes to: $dirty)"
  {
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'cores\t%s\n' "$(nproc)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'load\t%s\n' "$LOAD_AT_START (1, 5 and 15 min, when bench/run.sh started)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    printf 'nginx\t%s\n' "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
    printf 'haproxy\t%s\n' "$("$HAPROXY" -v 2>&1 | head -1 | awk '{print $3}')"
    printf 'rustc\t%s\n' "$(rustc -V)"
    printf 'commit\t%s\n' "$commit"
  } >>"$META"
}

write_method() {
  local wmem_max slow_note=
  wmem_max=$(awk '{print $3}' /proc/sys/net/ipv4/tcp_wmem 2>/dev/null || echo '?')
  if ((WARMUP + DURATION < 10)); then
    slow_note="  A run's ${WARMUP} s + ${DURATION} s, once the slow clients are open, is shorter than the
  shortest of these limits (10 s), so this scenario measures how each target serves its active
  clients while it holds $SLOW_PRESSURE slow ones, not how it cuts them off: a slow client ended within a
  run is one answered before its request was complete (the backend nginx answers
  \`POST /upload\` without waiting for the body, directly or through HAProxy)."
  fi
  cat >"$WORK/meta/method.md" <<EOF
- **Targets**, each on its own port on 127.0.0.1: the backend directly (the ceiling: wrk against
  one backend, no proxy), \`loadbalancer\` with \`"pairThreads": "spawn"\`, \`loadbalancer\` with
  \`"pairThreads": "pooled"\`, \`loadbalancer\` pooled with 10 routes (keep-alive scenarios only),
  nginx, HAProxy. The proxies balance round robin over the same three backends.
- **Pooled with 10 routes** (\`routed\`): the pooled config plus three small pools over the same
  backends and 10 routes in front of pool \`default\` (\`write_lb_routed_config\` in
  \`bench/run.sh\`); wrk's \`GET /\` fails the first nine (exact, \`*.\` and listed hosts, path
  prefixes, an exact path, methods, header fields) and is taken by the last, \`site\`
  (\`pathPrefix "/"\` to \`default\`), which edits no header fields and strips no prefix, so what
  differs from pooled is the routing alone. The issue's expectation is that its keep-alive
  throughput stays within 5% of pooled's; it is shown as a ratio to pooled in the same rounds, a
  measurement, not a pass or fail.
- **Backends**: one nginx process (\`worker_processes $BACKEND_WORKERS\`) with three \`server\`
  blocks on three ports, each answering \`/\` with a 64-byte body, \`/1m\` with a 1 MiB file
  (sendfile) and \`POST /upload\` with a 3-byte 200 (nginx reads and discards the body;
  \`client_body_buffer_size 128k\`, \`client_max_body_size 1m\`). \`keepalive_requests 1000000\`,
  access log off. Cheap enough that the backend is never the bottleneck.
- **Threads and workers.** Our \`workers\` setting is connection concurrency (how many requests can
  be in progress at once, each on its own blocking thread), not CPU parallelism; it has no
  counterpart in nginx or HAProxy, so ours keeps its default of $LB_WORKERS. What the peers do have is
  a CPU-parallelism setting, and the machine has $(nproc) cores, so nginx runs with
  \`worker_processes $PROXY_CPUS\` and HAProxy with \`nbthread $PROXY_CPUS\`.
- **Ours**: \`"workers": $LB_WORKERS\`, \`"maxConnections": 15000\`, \`"maxConnectionsPerClient": 0\`
  (wrk's connections all come from 127.0.0.1, and the peers have no such cap), \`"healthCheckInterval": "10s"\`,
  \`"idleTimeout": "75s"\` (nginx's keep-alive timeout, so the idle connections of the idle
  scenarios outlive a run, as they do with the peers; the default is 5 s), access log off via
  \`RUST_LOG=warn\`, everything else default.
- **nginx**: \`upstream\` with \`keepalive 64\`, \`proxy_http_version 1.1\`, \`Connection ""\`,
  \`keepalive_requests 1000000\` on both sides, \`client_body_buffer_size 128k\` (so 64 KiB uploads
  are buffered in memory, not in a temp file), access log off, default response buffering.
- **HAProxy**: \`mode http\`, \`balance roundrobin\`, \`maxconn 9000\` (two descriptors a
  connection, and the hard open-file limit here is 20,000), default \`http-reuse safe\`,
  keep-alive timeout 75 s, no logging.
- **Load**: \`wrk -t$WRK_THREADS\`, a ${WARMUP} s warm-up then a ${DURATION} s measured run, wrk's
  \`--timeout 3s\`. Interleaved: in each round every target runs once, in the order above
  (A B C … A B C …; the routed one, where it runs, right after pooled), $ROUNDS rounds per
  scenario ($TLS_ROUNDS for the HTTPS ones). Figures are medians over rounds; ratios
  are medians of per-round ratios. wrk, the proxy and the backend share the $(nproc) cores, so
  run-to-run noise is ±10–25% and only ratios inside one run mean much.
- **Fresh process per run**: each proxy is started before each of its runs and stopped after it,
  so the peak RSS is that run's: VmHWM from \`/proc/PID/status\`, summed over master and workers
  for nginx, the one process for HAProxy and ours (all its threads). CPU µs/req is the proxy's
  (or the backend's) user+system CPU during the measured run divided by the requests wrk completed.
- **Percentiles**: a Lua \`done()\` prints p50/p99/p99.9 (\`latency:percentile\`), requests,
  bytes and error counts on one machine-readable line.
- **Checks, per run** (a failed one is flagged in the checks column): wrk's socket errors
  (connect, read, write, timeout) are zero; no non-2xx responses (wrk counts statuses ≥ 400);
  a probe request on a fresh connection made halfway through the run gets a 200 within 3 s (a
  pool that starves some connections is invisible to wrk otherwise); the proxy is still alive at
  the end. In the idle-pressure scenario, $IDLE_PRESSURE connections each send one request, read
  the answer and stay idle (\`bench/lib/idle_conns.py\`) while wrk's 10 connections run; after the
  run, every idle connection must still be open and must answer a second request.
- **Idle pressure**: the figure is the active clients' p99.
- **1 MiB responses**: throughput in MiB/s of everything wrk read (headers included).
- **Slow clients** (\`bench/lib/slow_clients.py\`, one \`selectors\` loop): against the target's
  port, from $SLOW_SOURCES loopback source addresses (127.0.1.1 … 127.0.1.$SLOW_SOURCES, each socket bound
  before it connects), $SLOW_LORIS slowloris connections (\`GET / HTTP/1.1\`, \`Host\`, then an
  unfinished \`X-a:\` field, one more byte every $SLOW_INTERVAL s), $SLOW_UPLOADS slow uploads (a complete
  \`POST /upload\` head with \`Content-Length: 4096\`, then 4 body bytes every $SLOW_INTERVAL s) and
  $SLOW_READERS slow readers (\`GET /1m\` with a 4 KiB \`SO_RCVBUF\`, 1 KiB read every $SLOW_INTERVAL s). Once
  all $SLOW_PRESSURE have sent their first bytes, wrk's 10 keep-alive connections from 127.0.0.1 run as
  in the other scenarios (warm-up, then the measured run); then the slow clients are stopped.
  Each one the target answers, closes or resets is counted and replaced at once (at most
  $SLOW_REPLACE_RATE a second), so the pressure lasts the whole run; the direct line is the backend nginx
  under the same attack. On loopback the sender's kernel send buffer grows to hold a reader's
  whole 1 MiB answer whatever the reader's small \`SO_RCVBUF\` (\`net.ipv4.tcp_wmem\` maximum
  here: $wmem_max bytes), so a target can hand the whole answer to the kernel at once: for ours,
  a slow reader then holds no worker. Targets for the active clients: no errors and p99 under
  100 ms, and req/s within 10% of the same target's \`ka10\` in the same run. Every target keeps
  its settings from above; what each does with these clients under them:
  - ours, defaults: \`headerReadTimeout\` 10 s (a head not complete 10 s after its first byte
    gets \`408\`), \`bodyReadTimeout\` 30 s (silence in a body), \`minRequestBodyRate\` and
    \`minResponseRate\` 500 B/s after 20 s of grace (only time spent blocked on the client counts),
    \`maxConnectionsPerClient\` 256 (the slow clients hold 6 or 7 per source address). A body of
    4096 bytes is one the load balancer keeps before forwarding, so a slow upload waits in the
    watcher and never reaches a backend.
  - nginx, defaults (none of these is set above): \`client_header_timeout\` 60 s (the whole head
    within 60 s, else \`408\`), \`client_body_timeout\` 60 s and \`send_timeout\` 60 s (each between
    two successive reads or writes, so a client that moves a byte every $SLOW_INTERVAL s is never cut);
    \`proxy_request_buffering on\` (a slow upload never reaches a backend until its body is
    complete) and \`proxy_buffering on\` (the backend's answer is read as fast as it comes,
    whatever the client's pace).
  - HAProxy, as configured above: \`timeout http-request 10s\` (the whole head within 10 s, else
    \`408\`), \`timeout client 75s\` (client inactivity), \`timeout server 30s\`; without
    \`option http-buffer-request\`, a slow upload's complete head is forwarded to a backend at once
    and its body streamed as it comes.
$slow_note
- **HTTPS** (\`tls_ka50\`, \`tls_1mib10\`, \`tls_new50\`): ours in both modes, nginx and HAProxy each
  terminate TLS on a second listener (the plain one stays, unused but for our metrics), with plain
  HTTP to the same three backends as above; no direct line (the backends serve no TLS) and no
  routed one. One certificate for all three: self-signed ECDSA P-256 (\`prime256v1\`) for
  \`localhost\` and 127.0.0.1, made with \`openssl req\` into the run's temp dir when it starts and
  deleted with it. TLS 1.2 and 1.3 on all three, and resumption on in all three, by ticket and by
  session ID:
  - ours: rustls (ring provider), stateless tickets (TLS 1.2 tickets, TLS 1.3 PSKs) and an
    in-memory cache of 4,096 TLS 1.2 sessions, as built in (no setting);
  - nginx: \`ssl_protocols TLSv1.2 TLSv1.3\`, \`ssl_session_cache shared:SSL:10m\` (about 40,000
    sessions, shared by the workers), \`ssl_session_tickets on\`;
  - HAProxy: \`ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\`, \`alpn http/1.1\`, \`tune.ssl.cachesize
    20000\` (its default, written out), tickets on (its default).

  Cipher suites and groups are each one's defaults; the smoke test's table below shows what an
  OpenSSL client gets from each, and that each resumes a TLS 1.3 ticket, a TLS 1.2 ticket and a
  TLS 1.2 session ID. Session lifetimes (5 minutes for nginx and HAProxy, 12 hours for our tickets)
  outlast a run either way. wrk (OpenSSL $(openssl version | awk '{print $2}')) negotiates TLS 1.3
  and sends no ALPN; it is sent to \`https://localhost:PORT\`, because it sends its URL's host as
  SNI and an IP address is not allowed there (RFC 6066: rustls logs a warning for it on every
  handshake, nginx and HAProxy ignore it). \`tls_ka50\` and \`tls_1mib10\` are \`ka50\` and \`large10\` over https. \`tls_new50\`
  is \`close50\` over https: a new TCP connection and a new TLS handshake per request. **wrk
  resumes sessions across connections**: each connection slot keeps one OpenSSL \`SSL\` object,
  which wrk ends with \`SSL_shutdown\` and \`SSL_clear\` and reconnects with, and \`SSL_clear\` keeps
  the negotiated session, which the next handshake offers. So after each slot's first (full)
  handshake every handshake is a resumed one (TLS 1.3: a ticket, with an X25519 exchange but no
  certificate and no signature), for all three proxies alike; \`tls_new50\` measures new
  connections with resumed handshakes, not full ones. The scenario tables count the handshakes of
  each measured run where the proxy counts them (ours: \`lb_tls_handshakes_total\`; HAProxy: the
  frontend's \`ssl_sess\` and \`ssl_reused_sess\`; nginx has no counter; "full" includes the
  mid-run probe's). A failed one there is, once per run, wrk's own check as it starts (it
  connects to the port and closes without a byte) and, in \`tls_new50\`, connections wrk cuts
  mid-handshake when its run ends. Goals, as ours ÷ the better peer:
  at least 1.0× for 1 MiB responses, at least 0.9× for new connections.
EOF
  cat >"$WORK/meta/idle_method.md" <<EOF
A fresh process per mode; \`bench/lib/idle_conns.py\` (which raises its own \`RLIMIT_NOFILE\`) opens
$IDLE_BIG connections, sends one request on each, reads the answer and leaves the connection idle.
One second after the last answer the load balancer's VmRSS, peak RSS (VmHWM) and thread count
are read; then every connection is checked still open and sent a second request. Target: under
200 MiB.
EOF
  cat >"$WORK/meta/pool_method.md" <<EOF
A fresh process of ours per \`pairThreads\` mode and \`workers\` count (${POOL_SIZES// /, }), with the
other keys of the configs above. Once it has answered one request (its acceptor starts after every
worker and pair thread), its VmRSS and thread count are read; then keep-alive with 50 connections
and then with 200 (\`wrk -t$WRK_THREADS\`, a ${WARMUP} s warm-up and one ${DURATION} s measured run each, one round), with
the peak RSS (VmHWM) read after each. One round only: the ±10–25% noise of the scenarios applies.
EOF
  printf 'method\t@%s\n' "$WORK/meta/method.md" >>"$META"
  printf 'idle_method\t@%s\n' "$WORK/meta/idle_method.md" >>"$META"
  printf 'pool_method\t@%s\n' "$WORK/meta/pool_method.md" >>"$META"
}

write_report() {
  local elapsed=$(($(date +%s) - START_TIME))
  printf 'total\t%dm %02ds\n' $((elapsed / 60)) $((elapsed % 60)) >>"$META"
  python3 "$LIB/report.py" markdown --data "$DATA" --idle-data "$IDLE_DATA" --pool-data "$POOL_DATA" \
    --meta "$META" --out "$OUT"
  log "wrote $OUT"
}

# ---------------------------------------------------------------------------------------------

main() {
  install_tools
  build
  spawn_join_bench
  describe_machine
  write_configs
  write_method
  start_backends
  smoke_test
  run_scenarios
  idle_10k
  pool_sizes
  stop_pid "$BACKEND_PID"
  write_report
  local elapsed=$(($(date +%s) - START_TIME))
  log "total time: $((elapsed / 60))m $((elapsed % 60))s"
}

main "$@"
