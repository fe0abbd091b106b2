#!/usr/bin/env bash
# REGISTER with digest over UDP and TCP: holdfast against Kamailio, side by side in one
# run on this machine, driven by sipp. Every call of the scenario is one registration
# with two round trips: REGISTER -> 401 (challenge) -> REGISTER with Authorization -> 200.
# holdfast answers the 200 only once the binding is committed to SQLite (WAL,
# synchronous=FULL, group commit); Kamailio (kamailio-bench.cfg, -A WITH_SQLITE) reads
# the credentials from an indexed SQLite subscriber table and keeps its bindings in memory
# (usrloc db_mode 0). USERS users (10,000), the same for both servers.
#
# For each server and transport (sipp -t u1, -t t1) the offered rate is stepped up
# (each step held HOLD seconds, -m = rate * HOLD, the next rate = rate * FACTOR) to find
# the highest rate at >= 99.9 % successful registrations; every step also records the
# server's CPU time (utime+stime from /proc/PID/stat of every process of the server).
# Then, per transport, one dedicated step at a fixed rate that both sustain (CPU_RATE, or
# the lower of the two best rates when that is lower; Kamailio restarted with its best
# NCHILD) compares the CPU microseconds per registration; over UDP the CPU a server
# spends in the TAIL_S = 34 s after the step (holdfast expires its transactions 32 s
# after answering) is added.
# The bench reports; it never fails on timings (exit 2 only when it cannot run at all).
#
# Usage: bench/register-bench.sh [--quick] [--no-build] [--kamailio-bench DIR]
#   --quick             a short run (~3 min): 4 s steps doubling the rate, no retry and
#                       no refinement, Kamailio NCHILD=4 only
#   --no-build          use the existing target/release/holdfast
#   --kamailio-bench D  Kamailio's bench cfg and sipp scenarios (default: env
#                       KAMAILIO_BENCH_DIR, else ../shared/interop/kamailio-bench from the
#                       repo root): kamailio-bench.cfg and scenarios/register.xml are used.
#
# Environment (defaults for the full run, about 9-10 minutes on 2 cores):
#   START=2000 FACTOR=1.5 MAX=60000     offered registrations per second: START, then
#                                       each step FACTOR times the last (rounded to 500)
#   HOLD=8                              seconds per step
#   SETTLE_MAX=20                       after a failed step, wait up to this long for the
#                                       server's CPU to fall under 10 % of a processor
#   RETRY=1                             repeat a failing step once before giving up
#   REFINE=2                            bisection steps between the last pass and the fail
#   NCHILD="2 4 8"                      Kamailio children / tcp_children to try (best kept)
#   CPU_RATE=3000                       the fixed rate for CPU per registration (at most)
#   USERS=10000                         users (u1..uN, the same set for both servers)
#   TRANSPORTS="u1 t1"                  sipp transports
#   SERVERS="holdfast kamailio"         which servers to race (one alone for experiments)
#   HF_PORT=5090                        holdfast's SIP port (Kamailio's is 5080, set by its cfg)
#   SIPP_PORT=5091                      sipp's own port, the same for every step: Kamailio's
#                                       cfg stores only contacts on 127.0.0.1:5080-5099, and
#                                       one port keeps each AoR at one binding per transport
#   HF_NONCE_LIFETIME=30                [registrar] nonce_lifetime_secs for holdfast (see below)
#   HF_MAX_TX=2000000                   [limits] max_transactions for holdfast
#   HOLDFAST_BIN=                       a holdfast binary to race instead of building one
#   HF_LABEL=                           its name in the table (default: "tree", or the path)
#   KAMAILIO=/usr/sbin/kamailio  SIPP=sipp
#   OUT=target/register-bench           where steps.tsv, table.md and the logs are kept
#
# holdfast's digest layer remembers the nonce-count of every nonce it has seen for the
# nonce lifetime, at most 1,000,000 at once (past that it answers stale 401s), so with
# its default lifetime of 300 s it sustains at most 3,333 new nonces/s; a bench run
# registers more than that over a few minutes, so the bench lowers the lifetime to 30 s
# (sipp answers every challenge at once, so nothing else changes).
#
# Needs: sipp (Debian `sip-tester`), kamailio with db_sqlite (Debian `kamailio`,
# `kamailio-sqlite-modules`), sqlite3, python3 or curl+xargs, curl, ss, cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

bench_parse_args "$@"

if [ "$quick" = 1 ]; then
    : "${START:=2000}" "${FACTOR:=2}" "${HOLD:=4}" "${RETRY:=0}" "${REFINE:=0}" "${NCHILD:=4}"
fi
START="${START:-2000}"
FACTOR="${FACTOR:-1.5}"
MAX="${MAX:-60000}"
HOLD="${HOLD:-8}"
RETRY="${RETRY:-1}"
REFINE="${REFINE:-2}"
NCHILD="${NCHILD:-2 4 8}"
CPU_RATE="${CPU_RATE:-3000}"
USERS="${USERS:-10000}"
TRANSPORTS="${TRANSPORTS:-u1 t1}"
SERVERS="${SERVERS:-holdfast kamailio}"
HF_PORT="${HF_PORT:-5090}"
SIPP_PORT="${SIPP_PORT:-5091}"
HF_NONCE_LIFETIME="${HF_NONCE_LIFETIME:-30}"
HF_MAX_TX="${HF_MAX_TX:-2000000}"
KAM_PORT=5080
KAMAILIO="${KAMAILIO:-/usr/sbin/kamailio}"
SIPP="${SIPP:-sipp}"
OUT="${OUT:-$root/target/register-bench}"
RECV_TIMEOUT_MS=3000
SETTLE_MAX="${SETTLE_MAX:-20}"
# sipp's own socket buffers default to 64 kB: at thousands of messages a second its UDP
# socket then drops responses (and a TCP peer's window stalls), which reads as the
# server's failure. 4 MB is the kernel's rmem_max/wmem_max here.
SIPP_BUF=4194304
DOMAIN=127.0.0.1
PW_PREFIX="pw-"

kb_dir="$(cd "$kb_dir" 2>/dev/null && pwd)" || bench_die "no Kamailio bench directory (give --kamailio-bench DIR or KAMAILIO_BENCH_DIR)"
KAM_CFG="$kb_dir/kamailio-bench.cfg"
SCENARIO="$kb_dir/scenarios/register.xml"
[ -r "$KAM_CFG" ] || bench_die "missing $KAM_CFG"
[ -r "$SCENARIO" ] || bench_die "missing $SCENARIO"
bench_need "$SIPP" curl ss timeout awk
has_server() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if has_server kamailio; then
    bench_need "$KAMAILIO" sqlite3
    KAM_SQL_DIR=/usr/share/kamailio/db_sqlite
    for f in standard-create.sql auth_db-create.sql; do
        [ -r "$KAM_SQL_DIR/$f" ] || bench_die "missing $KAM_SQL_DIR/$f (install kamailio-sqlite-modules)"
    done
fi
case "$SIPP_PORT" in 508[0-9] | 509[0-9]) ;; *) bench_die "SIPP_PORT must be in 5080-5099 (Kamailio's cfg stores only those contacts)" ;; esac
for p in "$HF_PORT" "$KAM_PORT" "$SIPP_PORT"; do
    bench_port_busy "$p" && bench_die "port $p is in use; stop what uses it (or set HF_PORT / SIPP_PORT)"
done
[ "$HF_PORT" != "$SIPP_PORT" ] || bench_die "HF_PORT and SIPP_PORT must differ"

work="$(mktemp -d /tmp/register-bench.XXXXXX)"
mkdir -p "$OUT"
steps_tsv="$OUT/steps.tsv"
ncpu="$(nproc)"
clk_tck="$(getconf CLK_TCK)"
started_at="$(date '+%Y-%m-%d %H:%M %Z')"
t_start="$(date +%s)"
load_start="$(bench_load)"
users_csv="$work/users.csv"
bench_users_csv "$users_csv" "$USERS" u "$PW_PREFIX"

# ---------------------------------------------------------------- processes, cleanup
HF_TPID="" HF_PID="" KAM_TPID="" KAM_PID="" SIPP_TPID="" ADD_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    bench_stop "$ADD_PID" 2
    bench_stop "$SIPP_TPID" 2
    bench_stop "$KAM_PID" 10
    bench_stop "$KAM_TPID" 2
    bench_stop "$HF_PID" 10
    bench_stop "$HF_TPID" 2
    wait 2>/dev/null || true
    cp -f "$work"/*.log "$OUT"/ 2>/dev/null || true
    local d
    for d in "$work"/kam-*; do
        [ -f "$d/kamailio.log" ] && cp -f "$d/kamailio.log" "$OUT/kamailio-n${d##*kam-}.log"
    done
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every server runs under an outer timeout long enough for the whole run.
SERVER_TIMEOUT=3600

# ---------------------------------------------------------------- holdfast
HF_LABEL_DEFAULT=tree
if [ -n "${HOLDFAST_BIN:-}" ]; then
    build=0
    HF_LABEL_DEFAULT="$HOLDFAST_BIN"
fi
HF_LABEL="${HF_LABEL:-$HF_LABEL_DEFAULT}"
HF_DATA="$work/holdfast-data"
HF_TOKEN="register-bench-$RANDOM$RANDOM$RANDOM"
if has_server holdfast; then
    if [ "$build" = 1 ]; then
        bench_log "building holdfast (cargo build --release -p holdfast)"
        (cd "$root" && cargo build --release -p holdfast) >"$work/build.log" 2>&1 ||
            { tail -20 "$work/build.log" >&2; bench_die "cargo build failed"; }
    fi
    HF_BIN="${HOLDFAST_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/holdfast}"
    [ -x "$HF_BIN" ] || bench_die "no holdfast binary at $HF_BIN"
    admin_port="$(bench_free_port)"
    HF_ADMIN="http://127.0.0.1:$admin_port"
    HF_METRICS="$HF_ADMIN/metrics"
    cat >"$work/holdfast.toml" <<EOF
# register-bench: loopback only, per-IP limits out of the way, no bans (one source IP).
[sip]
listen = ["udp:127.0.0.1:$HF_PORT", "tcp:127.0.0.1:$HF_PORT"]

[limits]
messages_per_sec_per_ip = 1000000
message_burst_per_ip = 1000000
# each authenticated UDP REGISTER's transaction lingers 64*T1 = 32 s after its answer
# (the 401 is sent without a transaction)
max_transactions = $HF_MAX_TX

[registrar]
min_expires = 10
nonce_lifetime_secs = $HF_NONCE_LIFETIME

[bans]
enabled = false

[admin]
listen = "127.0.0.1:$admin_port"
token = "$HF_TOKEN"

[log]
level = "warn"
EOF
    "$HF_BIN" check-config "$work/holdfast.toml" >/dev/null || bench_die "holdfast rejects the bench config"
fi

hf_start() {
    timeout -k 5 "$SERVER_TIMEOUT" "$HF_BIN" run --config "$work/holdfast.toml" --data-dir "$HF_DATA" \
        >"$work/holdfast.log" 2>&1 &
    HF_TPID=$!
    local i
    for i in $(seq 1 100); do
        if curl -s --max-time 1 "$HF_METRICS" >/dev/null 2>&1; then break; fi
        kill -0 "$HF_TPID" 2>/dev/null || { cat "$work/holdfast.log" >&2; bench_die "holdfast exited"; }
        sleep 0.1
    done
    HF_PID="$(bench_tree "$HF_TPID" | sed -n 2p)"
    [ -n "$HF_PID" ] || bench_die "holdfast did not start"
    bench_log "holdfast pid $HF_PID on 127.0.0.1:$HF_PORT udp+tcp, admin $HF_ADMIN, data $HF_DATA ($(bench_fs_of "$work"))"
}

# hf_add_users: the domain and USERS users through the admin API, many requests in
# flight (the writes share group commits): seconds, where `holdfast user add` one process
# at a time takes minutes.
hf_add_users() {
    local t0 n
    t0="$(date +%s)"
    if command -v python3 >/dev/null 2>&1; then
        cat >"$work/add_users.py" <<'EOF'
import http.client, json, sys, threading
port, token, domain, n, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def post(c, path, body):
    c.request("POST", path, json.dumps(body), H)
    r = c.getresponse(); r.read()
    return r.status
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
s = post(c, "/api/v1/domains", {"name": domain})
if s not in (201, 409):
    sys.exit("adding the domain: HTTP %d" % s)
bad = []
def work(k, step):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(k + 1, n + 1, step):
        s = post(c, "/api/v1/users", {"aor": "u%d@%s" % (i, domain), "password": pw + str(i)})
        if s not in (201, 409):
            bad.append((i, s))
T = 32
ts = [threading.Thread(target=work, args=(k, T)) for k in range(T)]
for t in ts: t.start()
for t in ts: t.join()
if bad:
    sys.exit("%d users not added, e.g. %r" % (len(bad), bad[:3]))
EOF
        python3 "$work/add_users.py" "$admin_port" "$HF_TOKEN" "$DOMAIN" "$USERS" "$PW_PREFIX" \
            >"$work/add_users.log" 2>&1 &
        ADD_PID=$!
        wait "$ADD_PID" || { cat "$work/add_users.log" >&2; bench_die "adding holdfast's users failed"; }
        ADD_PID=""
    else
        curl -s -o /dev/null -H "Authorization: Bearer $HF_TOKEN" -H 'Content-Type: application/json' \
            -d "{\"name\":\"$DOMAIN\"}" "$HF_ADMIN/api/v1/domains"
        seq 1 "$USERS" | xargs -P 16 -I{} curl -s -o /dev/null -H "Authorization: Bearer $HF_TOKEN" \
            -H 'Content-Type: application/json' -d "{\"aor\":\"u{}@$DOMAIN\",\"password\":\"$PW_PREFIX{}\"}" \
            "$HF_ADMIN/api/v1/users"
    fi
    n="$(curl -s --max-time 30 -H "Authorization: Bearer $HF_TOKEN" "$HF_ADMIN/api/v1/users?domain=$DOMAIN" |
        grep -o '"aor"' | wc -l)"
    [ "$n" -ge "$USERS" ] || bench_die "holdfast lists $n users, not $USERS"
    bench_log "holdfast: $n users in $DOMAIN added in $(($(date +%s) - t0)) s through the admin API"
}

# holdfast's 500s (a binding that could not be stored) are logged, not counted.
hf_500s() { grep -c 'binding not stored' "$work/holdfast.log" 2>/dev/null || true; }

# ---------------------------------------------------------------- Kamailio
KAM_DB="$work/kamailio.sqlite"
kam_make_db() {
    {
        cat "$KAM_SQL_DIR/standard-create.sql" "$KAM_SQL_DIR/auth_db-create.sql"
        echo "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)"
        echo "INSERT INTO subscriber (username, domain, password) SELECT 'u' || i, '$DOMAIN', '$PW_PREFIX' || i FROM n;"
    } | sqlite3 "$KAM_DB" || bench_die "creating Kamailio's SQLite database failed"
    local n
    n="$(sqlite3 "$KAM_DB" 'SELECT count(*) FROM subscriber')"
    [ "$n" = "$USERS" ] || bench_die "Kamailio's subscriber table has $n rows, not $USERS"
    bench_log "kamailio: $n users in SQLite $KAM_DB (subscriber, index on username)"
}

kam_start() {
    local n="$1" d="$work/kam-$1" i
    mkdir -p "$d"
    # four slashes: an absolute path (three would be relative, and silently empty)
    local args=(-f "$KAM_CFG" -Y "$d" -A WITH_SQLITE -A "DBURL=\"sqlite:///$KAM_DB\"" -A "CTLSOCK=\"unix:$d/ctl\"" -A "NCHILD=$n")
    "$KAMAILIO" -c "${args[@]}" >"$d/check.log" 2>&1 || { tail "$d/check.log" >&2; bench_die "kamailio -c failed"; }
    # -DD: the main process stays our child; -E: log to stderr; -m 2048 MB shared memory
    (
        ulimit -c 0
        exec timeout -k 5 "$SERVER_TIMEOUT" "$KAMAILIO" "${args[@]}" -P "$d/pid" -DD -E -m 2048 -M 16
    ) >"$d/kamailio.log" 2>&1 &
    KAM_TPID=$!
    for i in $(seq 1 100); do
        if [ -s "$d/pid" ] && bench_port_busy "$KAM_PORT"; then break; fi
        kill -0 "$KAM_TPID" 2>/dev/null || { tail "$d/kamailio.log" >&2; bench_die "kamailio exited"; }
        sleep 0.1
    done
    KAM_PID="$(cat "$d/pid" 2>/dev/null || true)"
    [ -n "$KAM_PID" ] || bench_die "kamailio did not start"
    sleep 1 # let every child come up
    bench_log "kamailio NCHILD=$n pid $KAM_PID ($(bench_tree "$KAM_PID" | wc -l) processes) on 127.0.0.1:$KAM_PORT, credentials in SQLite"
}

kam_stop() {
    bench_stop "$KAM_PID" 10
    bench_stop "$KAM_TPID" 2
    wait "$KAM_TPID" 2>/dev/null || true
    KAM_PID="" KAM_TPID=""
    local i
    for i in $(seq 1 50); do bench_port_busy "$KAM_PORT" || break; sleep 0.1; done
}

# ---------------------------------------------------------------- one sipp step
printf 'server\tconfig\ttransport\tkind\trate\thold\tcalls\tcreated\tsuccessful\tfailed\tsuccess_pct\tachieved_rate\tretrans\tsrv_cpu_s\tsrv_cpu_us_per_reg\tsipp_cpu_pct\thost_busy_pct\tudp_rcvbuf_errors\tsrv_udp_sock_drops\thf_overloaded_503\thf_limit_hits\thf_write_queue_hits\thf_500\tsipp_rc\tpass\tother_cores\tfail_reasons\tunexpected_codes\ttail_cpu_s\tid\n' >"$steps_tsv"
COL_PASS=25
STEP_SEQ=0

# run_sipp TRANSPORT PORT RATE CALLS STATFILE ERRFILE: one sipp, bounded by -timeout and
# timeout(1). Sets SIPP_RC and SIPP_CPU_CS (sipp's user+sys in 1/100 s).
run_sipp() {
    local t="$1" port="$2" rate="$3" calls="$4" stat="$5" err="$6" secs cs0 cs1 i
    secs=$((calls / rate + RECV_TIMEOUT_MS / 1000 + 10))
    # the last sipp's socket must be gone (a TCP TIME_WAIT does not count)
    for i in $(seq 1 50); do bench_port_busy "$SIPP_PORT" || break; sleep 0.1; done
    bench_children_cpu_cs "$work/times"
    cs0="$BENCH_CHILD_CS"
    (cd "$work" && exec timeout -k 2 $((secs * 2 + 10)) "$SIPP" -sf "$SCENARIO" "127.0.0.1:$port" \
        -t "$t" -i 127.0.0.1 -p "$SIPP_PORT" -r "$rate" -m "$calls" -inf "$users_csv" \
        -recv_timeout "$RECV_TIMEOUT_MS" -timeout "${secs}s" -buff_size "$SIPP_BUF" \
        -nostdin -trace_stat -stf "$stat" -fd 1 -trace_err -error_file "$err" -max_log_size 20000000) \
        >/dev/null 2>>"$work/sipp.log" &
    SIPP_TPID=$!
    SIPP_RC=0
    wait "$SIPP_TPID" || SIPP_RC=$?
    SIPP_TPID=""
    bench_children_cpu_cs "$work/times"
    cs1="$BENCH_CHILD_CS"
    SIPP_CPU_CS=$((cs1 - cs0))
}

# run_step SERVER CONFIG TRANSPORT RATE [KIND]: one step; appends a row to steps.tsv and
# sets STEP_PASS (1/0). KIND: step (a rate of a series), cpu (the fixed-rate step), probe.
run_step() {
    local server="$1" config="$2" t="$3" rate="$4" kind="${5:-step}" port rootpid calls stat err
    local c0 c1 t0 t1 idle0 idle1 rcv0 rcv1 dr0 dr1 ov0=0 ov1=0 lh0=0 lh1=0 wq0=0 wq1=0 e0=0 e1=0
    local -a pids
    STEP_SEQ=$((STEP_SEQ + 1))
    if [ "$server" = holdfast ]; then port="$HF_PORT" rootpid="$HF_PID"; else port="$KAM_PORT" rootpid="$KAM_PID"; fi
    calls=$((rate * HOLD))
    if [ "$kind" = probe ]; then calls=$((rate * 2)); fi
    stat="$work/stat-$server-$config-$t-$rate-$RANDOM.csv"
    err="$work/err-$server-$config-$t-$rate-$RANDOM.log"
    mapfile -t pids < <(bench_tree "$rootpid")
    [ "${#pids[@]}" -gt 0 ] || pids=("$rootpid")
    if [ "$server" = holdfast ]; then
        ov0="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh0="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
        wq0="$(bench_metric_series "$HF_METRICS" 'holdfast_limit_hits_total{limit="write_queue"}')"
        e0="$(hf_500s)"
    fi
    rcv0="$(bench_udp_rcvbuf_errors)"
    dr0="$(bench_udp_sock_drops "$port")"
    c0="$(bench_cpu_ticks "${pids[@]}")"
    idle0="$(bench_idle_ticks)"
    t0="$(date +%s%N)"

    run_sipp "$t" "$port" "$rate" "$calls" "$stat" "$err"

    t1="$(date +%s%N)"
    idle1="$(bench_idle_ticks)"
    c1="$(bench_cpu_ticks "${pids[@]}")"
    dr1="$(bench_udp_sock_drops "$port")"
    rcv1="$(bench_udp_rcvbuf_errors)"
    if [ "$server" = holdfast ]; then
        ov1="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh1="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
        wq1="$(bench_metric_series "$HF_METRICS" 'holdfast_limit_hits_total{limit="write_queue"}')"
        e1="$(hf_500s)"
    fi

    local created succ failed retr achieved reasons codes
    read -r created succ failed retr achieved <<<"$(bench_sipp_stats "$stat" "$calls")"
    reasons="$(bench_sipp_fail_reasons "$stat")"
    codes="$(bench_sipp_unexpected "$err")"
    rm -f "$err"*

    STEP_END_TICKS="$c1" STEP_END_S="$(date +%s)" STEP_PIDS="${pids[*]}"
    local wall_ticks=$(((t1 - t0) * clk_tck / 1000000000))
    STEP_ROW="$(awk -v server="$server" -v config="$config" -v t="$t" -v kind="$kind" -v rate="$rate" -v hold="$HOLD" \
        -v calls="$calls" -v created="$created" -v succ="$succ" -v failed="$failed" -v ach="$achieved" \
        -v retr="$retr" -v cpu=$((c1 - c0)) -v tck="$clk_tck" -v scs="$SIPP_CPU_CS" -v wall=$((t1 - t0)) \
        -v idle=$((idle1 - idle0)) -v wt="$wall_ticks" -v ncpu="$ncpu" -v rcv=$((rcv1 - rcv0)) \
        -v dr=$((dr1 - dr0)) -v ov=$((ov1 - ov0)) -v lh=$((lh1 - lh0)) -v wq=$((wq1 - wq0)) -v e5=$((e1 - e0)) \
        -v rc="$SIPP_RC" -v reasons="$reasons" -v codes="$codes" -v id="$STEP_SEQ" 'BEGIN {
            if (kind == "probe") hold = 2
            pct = calls ? 100 * succ / calls : 0
            cpu_s = cpu / tck
            us = succ ? cpu_s * 1e6 / succ : 0
            sipp_pct = wall ? 100 * (scs / 100) / (wall / 1e9) : 0
            busy = wt ? 100 * (1 - idle / (ncpu * wt)) : 0
            if (busy < 0) busy = 0
            pass = (succ * 1000 >= calls * 999 && ach * 100 >= rate * 95) ? 1 : 0
            # processors kept busy by everything else on the host (other builds, fuzzers)
            other = wall ? busy / 100 * ncpu - (cpu_s + scs / 100) / (wall / 1e9) : 0
            if (other < 0) other = 0
            printf "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%d\t%d\t%.2f\t%.1f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%s\t%s\t-\t%d\n",
                server, config, t, kind, rate, hold, calls, created, succ, failed, pct, ach, retr, cpu_s, us,
                sipp_pct, busy, rcv, dr, ov, lh, wq, e5, rc, pass, other, reasons, codes, id
        }')"
    printf '%s\n' "$STEP_ROW" >>"$steps_tsv"
    STEP_PASS="$(cut -f$COL_PASS <<<"$STEP_ROW")"
    awk -F'\t' '{ printf "  %-8s %-5s %-3s %-5s %6d/s: %7.3f %% ok, achieved %6d/s, retrans %d, server %.2f s CPU = %.1f us/reg, sipp %s %% CPU, host busy %s %% (others %.1f cores)%s%s -> %s\n",
        $1, $2, $3, $4, $5, $11, $12, $13, $14, $15, $16, $17, $26,
        ($1 == "holdfast" ? sprintf(", 503 (overloaded) +%d, 500 +%d, limit hits +%d (write_queue +%d)", $20, $23, $21, $22) : "") \
        (($18 + $19) > 0 ? sprintf(", udp rcvbuf errors +%d (server socket +%d)", $18, $19) : ""),
        ($27 != "-" ? ", failed: " $27 "; unexpected " $28 : ""),
        ($25 ? "pass" : "FAIL") }' <<<"$STEP_ROW" >&2
    # a failed step leaves retransmissions and a backlog behind: let the server work
    # them off (its CPU back under 10 % of a processor), at most SETTLE_MAX seconds
    if [ "$STEP_PASS" != 1 ]; then
        local waited
        waited="$(bench_settle "$SETTLE_MAX" "${pids[@]}")"
        if [ "$waited" -gt 2 ]; then bench_log "$server took ${waited} s to settle"; fi
    fi
}

# try_rate SERVER CONFIG TRANSPORT RATE: one step, repeated once on failure with RETRY=1.
try_rate() {
    run_step "$@"
    if [ "$STEP_PASS" != 1 ] && [ "$RETRY" = 1 ]; then
        run_step "$@"
    fi
    [ "$STEP_PASS" = 1 ]
}

# next_rate RATE: RATE * FACTOR rounded to 500 (at least RATE + 500).
next_rate() {
    awk -v r="$1" -v f="$FACTOR" 'BEGIN { n = int(r * f / 500 + 0.5) * 500; if (n < r + 500) n = r + 500; print n }'
}

# above_rate RATE: the first rate worth trying to beat RATE: RATE * 1.1 rounded up to
# 500 (at least RATE + 500).
above_rate() {
    awk -v r="$1" 'BEGIN { n = int((r * 1.1 + 499) / 500) * 500; if (n < r + 500) n = r + 500; print n }'
}

declare -A PROBE_NOTE
# series SERVER CONFIG TRANSPORT FIRST_RATE [DOWN]: a probe (2 s at 500/s, also the
# warm-up: a server that fails it is not stepped), then step up from FIRST_RATE until a
# step fails (after RETRY); with DOWN=1 (the default) and a failing first step, halve the
# rate until one passes (down to 500/s); then REFINE bisection steps between the best
# pass and the lowest fail. Sets SERIES_BEST (0: nothing passed).
# (Not run in $(...): the EXIT trap must see the sipp it starts.)
series() {
    local server="$1" config="$2" t="$3" rate="$4" down="${5:-1}" best=0 fail=0 i mid
    run_step "$server" "$config" "$t" 500 probe
    if [ "$STEP_PASS" != 1 ]; then
        PROBE_NOTE[$server,$t]="$(awk -F'\t' '{ printf "fails even at 500/s (%.1f %% ok; unexpected responses %s; sipp: %s)", $11, $28, $27 }' <<<"$STEP_ROW")"
        bench_log "$server -t $t ${PROBE_NOTE[$server,$t]}: not stepped"
        SERIES_BEST=0
        return
    fi
    while [ "$rate" -le "$MAX" ]; do
        if try_rate "$server" "$config" "$t" "$rate"; then
            best="$rate"
            rate="$(next_rate "$rate")"
        else
            fail="$rate"
            break
        fi
    done
    if [ "$down" = 1 ] && [ "$best" = 0 ] && [ "$fail" -gt 0 ]; then
        rate=$((fail / 2 / 500 * 500))
        while [ "$rate" -ge 500 ]; do
            if try_rate "$server" "$config" "$t" "$rate"; then best="$rate"; break; fi
            fail="$rate"
            rate=$((rate / 2 / 500 * 500))
        done
    fi
    for i in $(seq 1 "$REFINE"); do
        [ "$best" -gt 0 ] && [ "$fail" -gt 0 ] || break
        mid=$(((best + fail) / 2 / 500 * 500))
        [ "$mid" -gt "$best" ] || break
        run_step "$server" "$config" "$t" "$mid"
        if [ "$STEP_PASS" = 1 ]; then best="$mid"; else fail="$mid"; fi
    done
    SERIES_BEST="$best"
}

# ---------------------------------------------------------------- the run
fsync_ms="$(bench_fsync_ms "$work")"
bench_log "machine: $ncpu cores, $(uname -r); $load_start; $work on $(bench_fs_of "$work"), ${fsync_ms:-?} ms per 4 kB O_DSYNC write"
bench_log "steps: from $START/s x$FACTOR up to $MAX/s, $HOLD s each, retry=$RETRY refine=$REFINE; CPU at $CPU_RATE/s or the lower of the two best rates; $USERS users; Kamailio NCHILD in: $NCHILD"
if has_server holdfast; then
    hf_start
    hf_add_users
fi
if has_server kamailio; then kam_make_db; fi

declare -A MAXRATE KAMN CPURATE
for t in $TRANSPORTS; do KAMN[$t]="-"; MAXRATE[kamailio,$t]=0; MAXRATE[holdfast,$t]=0; done

HF_LAST_UDP_END=0
hf_series() {
    bench_log "holdfast ($HF_LABEL) -t $1: stepping from $START/s"
    series holdfast hf "$1" "$START"
    MAXRATE[holdfast,$1]="$SERIES_BEST"
    if [ "$1" = u1 ]; then HF_LAST_UDP_END="$(date +%s)"; fi
}

# cpu_rate TRANSPORT: CPU_RATE, or the lower of the servers' best rates when that is
# lower (both passed it or faster); sets CPURATE[TRANSPORT].
cpu_rate() {
    local r="$CPU_RATE" m
    for m in "${MAXRATE[holdfast,$1]}" "${MAXRATE[kamailio,$1]}"; do
        if [ "$m" -gt 0 ] && [ "$m" -lt "$r" ]; then r="$m"; fi
    done
    CPURATE[$1]="$r"
}

# The fixed-rate CPU step. Over UDP holdfast frees each answered transaction 64*T1 =
# 32 s later (Timer J), so part of a registration's CPU is spent after the step: for a
# UDP CPU step the server's CPU is read again TAIL_S seconds after the step ended and
# that tail is added (column tail_cpu_s; srv_cpu_us_per_reg then includes it). Both
# servers get the same treatment; the waits overlap.
TAIL_S=34
declare -A TAIL_ID TAIL_TICKS TAIL_END TAIL_PIDS
# cpu_step SERVER CONFIG TRANSPORT: one step at CPURATE[TRANSPORT] (unless the server
# failed its probe); for UDP, arms the tail reading.
cpu_step() {
    local r="${CPURATE[$3]}"
    [ -z "${PROBE_NOTE[$1,$3]:-}" ] || return 0
    bench_log "$1 -t $3: CPU at $r/s"
    run_step "$1" "$2" "$3" "$r" cpu
    if [ "$3" = u1 ]; then
        TAIL_ID[$1]="$STEP_SEQ" TAIL_TICKS[$1]="$STEP_END_TICKS" TAIL_END[$1]="$STEP_END_S" TAIL_PIDS[$1]="$STEP_PIDS"
    fi
}
# cpu_tail SERVER: waits until TAIL_S after the server's armed CPU step, then adds the
# CPU used since its end to that step's row.
cpu_tail() {
    local id="${TAIL_ID[$1]:-}" wait_s now ticks
    [ -n "$id" ] || return 0
    wait_s=$((TAIL_END[$1] + TAIL_S - $(date +%s)))
    if [ "$wait_s" -gt 0 ]; then
        bench_log "$1: reading its CPU ${TAIL_S} s after its UDP CPU step (deferred work: expiring transactions): waiting ${wait_s} s"
        sleep "$wait_s"
    fi
    # shellcheck disable=SC2086 # a list of PIDs
    now="$(bench_cpu_ticks ${TAIL_PIDS[$1]})"
    ticks=$((now - TAIL_TICKS[$1]))
    awk -F'\t' -v OFS='\t' -v id="$id" -v tail="$ticks" -v tck="$clk_tck" '
        NR > 1 && $30 == id {
            $29 = sprintf("%.2f", tail / tck)
            if ($9 > 0) $15 = sprintf("%.1f", ($14 + tail / tck) * 1e6 / $9)
        } { print }' "$steps_tsv" >"$steps_tsv.new" && mv "$steps_tsv.new" "$steps_tsv"
    bench_log "$1: $(awk -v t="$ticks" -v k="$clk_tck" 'BEGIN { printf "%.2f", t / k }') s CPU after its UDP CPU step"
    TAIL_ID[$1]=""
}

# 1. Kamailio, each NCHILD in turn, every transport; a later NCHILD starts about 10 %
#    above the best so far and does not step down, since it only matters if it beats it.
# 2. holdfast, every transport.
# 3. For each transport, Kamailio restarted with its best NCHILD for that transport
#    and holdfast, one CPU step each at the same fixed rate.
if has_server kamailio; then
    first_n=1
    for n in $NCHILD; do
        kam_start "$n"
        for t in $TRANSPORTS; do
            prev="${MAXRATE[kamailio,$t]}"
            first="$START"
            if [ "$prev" -gt 0 ]; then first="$(above_rate "$prev")"; fi
            bench_log "kamailio NCHILD=$n -t $t: stepping from $first/s"
            series kamailio "n$n" "$t" "$first" "$first_n"
            b="$SERIES_BEST"
            if [ "$b" -gt "$prev" ]; then MAXRATE[kamailio,$t]="$b"; KAMN[$t]="$n"; fi
        done
        first_n=0
        kam_stop
    done
fi
if has_server holdfast; then
    for t in $TRANSPORTS; do hf_series "$t"; done
fi
kam_running=""
for t in $TRANSPORTS; do
    cpu_rate "$t"
    if has_server kamailio; then
        n="${KAMN[$t]}"
        if [ "$n" = "-" ]; then n="${NCHILD%% *}"; fi
        if [ "$kam_running" != "$n" ]; then
            [ -z "$kam_running" ] || kam_stop
            kam_start "$n"
            kam_running="$n"
        fi
        cpu_step kamailio "n$n" "$t"
    fi
    if has_server holdfast; then
        if [ "$t" = u1 ] && [ "$HF_LAST_UDP_END" -gt 0 ]; then
            # its UDP series' transactions must be gone, or their expiry counts here
            wait_s=$((HF_LAST_UDP_END + TAIL_S - $(date +%s)))
            if [ "$wait_s" -gt 0 ]; then
                bench_log "holdfast: waiting ${wait_s} s for its UDP series' transactions to expire"
                sleep "$wait_s"
            fi
        fi
        cpu_step holdfast hf "$t"
    fi
    cpu_tail kamailio
    cpu_tail holdfast
done
[ -z "$kam_running" ] || kam_stop
hf_stop_metrics=""
hf_bindings="-"
if has_server holdfast; then
    hf_stop_metrics="$(curl -s --max-time 2 "$HF_METRICS" | grep -v '^#' | awk '$2 != 0' || true)"
    hf_bindings="$(curl -s --max-time 30 -H "Authorization: Bearer $HF_TOKEN" "$HF_ADMIN/api/v1/registrations" |
        grep -o '"aor"' | wc -l || true)"
fi
load_end="$(bench_load)"
elapsed=$(($(date +%s) - t_start))

# ---------------------------------------------------------------- the table
# CPU per registration at the transport's fixed rate: the lowest of the steps that passed
# at that rate (for Kamailio over every NCHILD tried); "*" = none passed (lowest shown).
cpu_at() {
    awk -F'\t' -v s="$1" -v t="$2" -v r="${CPURATE[$2]}" -v p="$COL_PASS" '
        $1 == s && $3 == t && $4 == "cpu" && $5 == r {
            if ($p == 1 && (ok == "" || $15 < ok)) ok = $15
            if (a == "" || $15 < a) a = $15
        }
        END { if (ok != "") printf "%.1f", ok; else if (a != "") printf "%.1f*", a; else printf "-" }' "$steps_tsv"
}
# ratio A B: A/B; "*" when either figure is flagged.
ratio() {
    local flag=""
    case "$1$2" in *'*'*) flag="*" ;; esac
    awk -v a="${1%\*}" -v b="${2%\*}" -v f="$flag" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f%s", a / b, f; else printf "-" }'
}
# max_cell SERVER TRANSPORT: the best rate, or "<R" with R the lowest failing rate.
max_cell() {
    local best="${MAXRATE[$1,$2]}"
    if [ "$best" -gt 0 ]; then echo "$best"; return; fi
    awk -F'\t' -v s="$1" -v t="$2" -v p="$COL_PASS" '$1 == s && $3 == t && $p == 0 && (m == "" || $5 < m) { m = $5 }
        END { print (m == "" ? "-" : "<" m) }' "$steps_tsv"
}
# fail_note SERVER TRANSPORT: what the first failing step of a series showed.
fail_note() {
    awk -F'\t' -v s="$1" -v t="$2" -v p="$COL_PASS" '$1 == s && $3 == t && $4 == "step" && $p == 0 {
        printf "first failing step %d/s (%s): %.3f %% ok, achieved %d/s, %d retransmissions, server UDP socket drops %d", $5, $2, $11, $12, $13, $19
        if (s == "holdfast") printf ", 503 (holdfast_overloaded_total) +%d, 500 +%d, holdfast_limit_hits_total +%d (write_queue +%d)", $20, $23, $21, $22
        printf ", sipp failures %s, unexpected responses %s, others on the host %.1f cores\n", $27, $28, $26
        exit }' "$steps_tsv"
}
# sipp's CPU at a series' highest passing step: near 100 % the race measures sipp.
sipp_at() {
    awk -F'\t' -v s="$1" -v t="$2" -v r="$3" -v p="$COL_PASS" '$1 == s && $3 == t && $5 == r && $p == 1 { x = $16 } END { print (x == "" ? "-" : x) }' "$steps_tsv"
}
# sipp's retransmissions at a series' highest passing step (a pass with many means
# answers later than 500 ms: the rate is at the edge).
retr_at() {
    awk -F'\t' -v s="$1" -v t="$2" -v r="$3" -v p="$COL_PASS" '$1 == s && $3 == t && $5 == r && $p == 1 { x = $13 } END { print (x == "" ? "-" : x) }' "$steps_tsv"
}

table="$OUT/table.md"
{
    echo "REGISTER with digest (2 round trips), $USERS users, sipp stepping from $START/s x$FACTOR (${HOLD} s per step, >= 99.9 % successful and >= 95 % of the offered rate achieved); CPU per registration at one fixed rate per transport"
    echo "$started_at; $ncpu cores; $(uname -r); at start: $load_start; at end: $load_end; run took $((elapsed / 60)) min $((elapsed % 60)) s"
    echo "holdfast: $HF_LABEL; data on $(bench_fs_of "$work") (${fsync_ms:-?} ms per 4 kB O_DSYNC write)"
    echo
    echo "| transport | holdfast max reg/s | Kamailio max reg/s | ratio hf/kam | CPU measured at | holdfast CPU µs/reg | Kamailio CPU µs/reg | ratio hf/kam |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for t in $TRANSPORTS; do
        case "$t" in u1) tn="UDP" ;; t1) tn="TCP" ;; *) tn="$t" ;; esac
        hm="$(max_cell holdfast "$t")" km="$(max_cell kamailio "$t")"
        hc="$(cpu_at holdfast "$t")" kc="$(cpu_at kamailio "$t")"
        echo "| $tn (-t $t) | $hm | $km | $(ratio "$hm" "$km") | ${CPURATE[$t]:-$CPU_RATE}/s | $hc | $kc | $(ratio "$hc" "$kc") |"
    done
    echo
    for t in $TRANSPORTS; do
        echo "- -t $t: Kamailio's best NCHILD ${KAMN[$t]}; at the best step sipp used holdfast $(sipp_at holdfast "$t" "${MAXRATE[holdfast,$t]}") %, Kamailio $(sipp_at kamailio "$t" "${MAXRATE[kamailio,$t]}") % of a processor (near 100 % sipp is the limit, not the server) and retransmitted holdfast $(retr_at holdfast "$t" "${MAXRATE[holdfast,$t]}"), Kamailio $(retr_at kamailio "$t" "${MAXRATE[kamailio,$t]}") times"
    done
    for t in $TRANSPORTS; do
        for srv in holdfast kamailio; do
            if [ -n "${PROBE_NOTE[$srv,$t]:-}" ]; then
                echo "- -t $t $srv: ${PROBE_NOTE[$srv,$t]}"
            else
                n="$(fail_note "$srv" "$t")"
                [ -n "$n" ] && echo "- -t $t $srv: $n"
            fi
        done
    done
    echo "- CPU µs/reg: the server's utime+stime over the fixed-rate step (Kamailio with its best NCHILD, all its processes) per successful registration; over UDP plus what it used in the ${TAIL_S} s after the step (holdfast frees each UDP transaction 32 s after answering it); tails in steps.tsv (tail_cpu_s). '*' = the fixed-rate step did not pass."
    if has_server holdfast; then
        echo "- holdfast: every 200 after its binding is committed (SQLite WAL, synchronous=FULL, group commit); $hf_bindings bindings listed at the end; max_transactions $HF_MAX_TX (over UDP 1 per registration, the authenticated REGISTER's, kept 32 s: a sustained ceiling of $((HF_MAX_TX / 32))/s), nonce_lifetime_secs $HF_NONCE_LIFETIME."
    fi
    echo "- Kamailio: credentials in SQLite (db_sqlite, subscriber table with its username index), bindings in memory (usrloc db_mode 0)."
    echo "- Steps: $steps_tsv"
} >"$table"
echo
cat "$table"
if [ -n "$hf_stop_metrics" ]; then
    echo
    echo "holdfast counters at the end (non-zero):"
    sed 's/^/  /' <<<"$hf_stop_metrics"
fi
