#!/usr/bin/env bash
# Calls through the proxy over UDP and TCP: holdfast against Kamailio, side by side in
# one run on this machine, driven by two sipp processes. Every call is
#   INVITE -> 407 -> ACK -> INVITE with Proxy-Authorization -> 100 -> 180 -> 200
#   (Record-Route) -> ACK -> BYE -> 200
# from the caller (sipp uac, crates/holdfast/tests/scenarios/call_uac.xml, -d 0: no hold
# time) through the server to one registered callee (sipp, call_uas_register.xml, which
# registers with digest and keeps its socket or connection open, plus call_uas.xml as its
# out-of-call scenario, which answers every INVITE). The same scenarios for both servers;
# callers u1..uUSERS, one callee per transport, all in domain 127.0.0.1.
# holdfast writes a call record for every call, durably (its default: SQLite, WAL,
# synchronous=FULL, group commit); Kamailio (kamailio-bench.cfg, -A WITH_SQLITE) reads
# the credentials from SQLite, keeps its location table in memory and writes no records.
#
# For each server and transport (sipp -t u1, -t t1) the offered call rate is stepped up
# (each step held HOLD seconds, -m = rate * HOLD, the next rate = rate * FACTOR) to find
# the highest rate at >= 99.9 % successful calls with >= 95 % of the offered rate
# achieved; a fresh callee registers before each step. Every step also records the
# server's CPU time (utime+stime from /proc/PID/stat of every process of the server).
# Then, per transport, one step at a fixed rate that both sustain (CPU_RATE, or the lower
# of the two best rates when that is lower; Kamailio restarted with its best NCHILD, holdfast restarted on its data)
# compares the CPU microseconds per call; over UDP the CPU a server spends in the
# TAIL_S = 34 s after the step (holdfast expires its UDP transactions 32 s after they
# end) is added.
# The bench reports; it never fails on timings (exit 2 only when it cannot run at all).
#
# Usage: bench/call-bench.sh [--quick] [--no-build] [--kamailio-bench DIR]
#   --quick             a smoke run (~3-4 min): 4 s steps doubling the rate, no retry, no
#                       refinement, no CPU tail, Kamailio NCHILD=4 only
#   --no-build          use the existing target/release/holdfast
#   --kamailio-bench D  Kamailio's bench cfg (default: env KAMAILIO_BENCH_DIR, else
#                       ../shared/interop/kamailio-bench from the repo root):
#                       kamailio-bench.cfg is used; the sipp scenarios are this repo's.
#
# Environment (defaults for the full run, about 20-25 minutes on 2 cores):
#   START=500 FACTOR=1.5 MAX=20000      offered calls per second: START, then each step
#                                       FACTOR times the last (rounded to 100)
#   HOLD=8                              seconds per step
#   SETTLE_MAX=20                       after a failed step, wait up to this long for the
#                                       server's CPU to fall under 10 % of a processor
#   RETRY=1                             repeat a failing step once before giving up
#   RESTART_FAILED=1                    restart the server after a failed step of a series
#                                       (0: wait for its CPU to settle instead)
#   ROUNDS=2                            rounds of series: each server's maximum is its best
#                                       over the rounds, Kamailio first in odd rounds and
#                                       holdfast first in even ones (rounds after the first
#                                       step only Kamailio's best NCHILD of round 1)
#   REFINE=2                            bisection steps between the last pass and the fail
#   NCHILD="2 4 8"                      Kamailio children / tcp_children to try (best kept)
#   CPU_RATE=1000                       the fixed rate for CPU per call (at most)
#   TAIL=1                              add the CPU of the TAIL_S s after a UDP CPU step
#   USERS=1000                          callers (u1..uN, the same set for both servers)
#   TRANSPORTS="u1 t1"                  sipp transports
#   SERVERS="holdfast kamailio"         which servers to race (one alone for experiments)
#   HF_PORT=5090                        holdfast's SIP port (Kamailio's is 5080, set by its cfg)
#   UAC_PORT=5091 UAS_PORT=5092         sipp's own ports: Kamailio's cfg stores contacts and
#                                       relays only to 127.0.0.1:5080-5099
#   HF_NONCE_LIFETIME=30                [registrar] nonce_lifetime_secs for holdfast (every
#                                       call gets a fresh nonce; see register-bench.sh)
#   HF_MAX_TX=2000000                   [limits] max_transactions for holdfast
#   HF_CORE_SHARDS=0                    [sip] core_shards for holdfast (0: one per processor)
#   HF_DIGEST_ALGORITHMS=               [registrar] digest_algorithms for holdfast, e.g. '["MD5"]' (default: its own)
#   HOLDFAST_BIN=                       a holdfast binary to race instead of building one
#   HF_LABEL=                           its name in the table (default: "tree", or the path)
#   KAMAILIO=/usr/sbin/kamailio  SIPP=sipp
#   OUT=target/call-bench               where steps.tsv, table.md and the logs are kept
#
# Needs: sipp (Debian `sip-tester`), kamailio with db_sqlite (Debian `kamailio`,
# `kamailio-sqlite-modules`), sqlite3, python3 or curl+xargs, curl, ss, cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

bench_parse_args "$@"

if [ "$quick" = 1 ]; then
    : "${START:=500}" "${FACTOR:=2}" "${HOLD:=4}" "${RETRY:=0}" "${REFINE:=0}" "${NCHILD:=4}" "${ROUNDS:=1}" "${TAIL:=0}"
fi
START="${START:-500}"
FACTOR="${FACTOR:-1.5}"
MAX="${MAX:-20000}"
HOLD="${HOLD:-8}"
RETRY="${RETRY:-1}"
ROUNDS="${ROUNDS:-2}"
REFINE="${REFINE:-2}"
NCHILD="${NCHILD:-2 4 8}"
CPU_RATE="${CPU_RATE:-1000}"
TAIL="${TAIL:-1}"
USERS="${USERS:-1000}"
TRANSPORTS="${TRANSPORTS:-u1 t1}"
SERVERS="${SERVERS:-holdfast kamailio}"
HF_PORT="${HF_PORT:-5090}"
UAC_PORT="${UAC_PORT:-5091}"
UAS_PORT="${UAS_PORT:-5092}"
HF_NONCE_LIFETIME="${HF_NONCE_LIFETIME:-30}"
HF_MAX_TX="${HF_MAX_TX:-2000000}"
KAM_PORT=5080
KAMAILIO="${KAMAILIO:-/usr/sbin/kamailio}"
SIPP="${SIPP:-sipp}"
OUT="${OUT:-$root/target/call-bench}"
RECV_TIMEOUT_MS=3000
SETTLE_MAX="${SETTLE_MAX:-20}"
# sipp's socket buffers default to 64 kB: at thousands of messages a second its UDP
# socket then drops, which reads as the server's failure. 4 MB is the kernel's maximum here.
SIPP_BUF=4194304
DOMAIN=127.0.0.1
PW_PREFIX="pw-"
SCEN="$root/crates/holdfast/tests/scenarios"

bench_kb_dir
KAM_CFG="$kb_dir/kamailio-bench.cfg"
[ -r "$KAM_CFG" ] || bench_die "missing $KAM_CFG"
for f in call_uac.xml call_uas.xml call_uas_register.xml; do
    [ -r "$SCEN/$f" ] || bench_die "missing $SCEN/$f"
done
bench_need "$SIPP" curl ss timeout awk
if has_server kamailio; then bench_need_kam_sqlite; fi
for p in "$UAC_PORT" "$UAS_PORT"; do
    case "$p" in 508[0-9] | 509[0-9]) ;; *) bench_die "UAC_PORT and UAS_PORT must be in 5080-5099 (Kamailio's cfg relays only there)" ;; esac
done
for p in "$HF_PORT" "$KAM_PORT" "$UAC_PORT" "$UAS_PORT"; do
    bench_port_busy "$p" && bench_die "port $p is in use; stop what uses it (or set HF_PORT / UAC_PORT / UAS_PORT)"
done
[ "$(printf '%s\n' "$HF_PORT" "$UAC_PORT" "$UAS_PORT" | sort -u | wc -l)" = 3 ] || bench_die "HF_PORT, UAC_PORT and UAS_PORT must differ"

bench_workdir call-bench
# callers: u1..uN;pw-1..pw-N;127.0.0.1
awk -v n="$USERS" -v p="$PW_PREFIX" -v d="$DOMAIN" 'BEGIN { print "SEQUENTIAL"; for (i = 1; i <= n; i++) print "u" i ";" p i ";" d }' >"$work/callers.csv"
# one callee per transport: a callee registered over both would get two contacts
callee_of() { echo "callee-$1"; }
for t in $TRANSPORTS; do
    printf 'SEQUENTIAL\n%s;%s%s;%s\n' "$(callee_of "$t")" "$PW_PREFIX" "$(callee_of "$t")" "$DOMAIN" >"$work/callee-$t.csv"
done
media_port() { # a run of 4 free UDP ports for a sipp's -mp
    local p i ok
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        ok=1
        for q in "$p" $((p + 1)) $((p + 2)) $((p + 3)); do bench_port_busy "$q" && ok=0; done
        if [ "$ok" = 1 ]; then echo "$p"; return 0; fi
    done
    bench_die "no free media ports"
}

# ---------------------------------------------------------------- processes, cleanup
bench_traps ADD_PID SIPP_TPID UAS_TPID

# ---------------------------------------------------------------- holdfast
bench_hf_label
HF_DATA="$work/holdfast-data"
HF_TOKEN="call-bench-$RANDOM$RANDOM$RANDOM"
if has_server holdfast; then
    bench_hf_bin
    bench_hf_registrar_config "# call-bench: loopback only, per-IP limits out of the way, no bans (one source IP);
# call records as by default (durable)." \
        "# each UDP transaction lingers 64*T1 = 32 s after it ends"
fi

hf_start() { bench_hf_start_data; }

# hf_add_users: the domain, the callers and the callees through the admin API, many
# requests in flight.
hf_add_users() {
    local t callees=""
    for t in $TRANSPORTS; do callees="$callees $(callee_of "$t")"; done
    # shellcheck disable=SC2086 # a list of user names
    bench_hf_add_users 16 $callees
}

# hf_cdr_count: the call records /api/v1/cdrs lists (all pages), or "?" when it cannot
# be read within 120 s.
hf_cdr_count() {
    command -v python3 >/dev/null 2>&1 || { echo "?"; return; }
    timeout 120 python3 - "$admin_port" "$HF_TOKEN" <<'EOF' 2>/dev/null || echo "?"
import http.client, json, sys, urllib.parse
port, token = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
H = {"Authorization": "Bearer " + token}
n, cursor, answered = 0, None, 0
while True:
    path = "/api/v1/cdrs?limit=1000" + ("&cursor=" + urllib.parse.quote(str(cursor)) if cursor else "")
    c.request("GET", path, headers=H)
    r = c.getresponse(); body = r.read()
    if r.status != 200:
        raise SystemExit(1)
    v = json.loads(body)
    recs = v.get("records") or []
    n += len(recs)
    answered += sum(1 for x in recs if x.get("disposition") == "answered")
    cursor = v.get("next_cursor")
    if not recs or not cursor:
        break
print("%d (%d answered)" % (n, answered))
EOF
}

# ---------------------------------------------------------------- Kamailio
KAM_DB="$work/kamailio.sqlite"
kam_make_db() {
    local t sql=""
    for t in $TRANSPORTS; do
        sql="$sql${sql:+
}INSERT INTO subscriber (username, domain, password) VALUES ('$(callee_of "$t")', '$DOMAIN', '$PW_PREFIX$(callee_of "$t")');"
    done
    bench_kam_make_db 0 "$sql"
}

kam_start() { bench_kam_start_sqlite "$1"; }

# ---------------------------------------------------------------- one sipp step
printf 'server\tconfig\ttransport\tkind\trate\thold\tcalls\tcreated\tsuccessful\tfailed\tsuccess_pct\tachieved_rate\tretrans\tsrv_cpu_s\tsrv_cpu_us_per_call\tsipp_cpu_pct\thost_busy_pct\tudp_rcvbuf_errors\tsrv_udp_sock_drops\thf_overloaded_503\thf_limit_hits\tcallee_byes\tuas_cpu_pct\tsipp_rc\tpass\tother_cores\tfail_reasons\tunexpected_codes\ttail_cpu_s\tid\n' >"$steps_tsv"
COL_KIND=4 COL_RATE=5 COL_US=15 COL_PASS=25
STEP_SEQ=0
BENCH_UNIT=100

# start_callee TRANSPORT PORT LOG: a sipp that registers the transport's callee with the
# server on PORT and answers its calls until stopped; returns once it is registered.
# Sets UAS_TPID and UAS_PID; UAS_OK=0 when it did not register within 10 s.
start_callee() {
    local t="$1" port="$2" log="$3" i
    bench_wait_port_free "$UAS_PORT"
    rm -f "$log"
    (cd "$work" && exec timeout -k 2 "$SERVER_TIMEOUT" "$SIPP" -sf "$SCEN/call_uas_register.xml" \
        -oocsf "$SCEN/call_uas.xml" "127.0.0.1:$port" -t "$t" -i 127.0.0.1 -p "$UAS_PORT" \
        -mp "$(media_port)" -m 1 -d 3600000 -inf "$work/callee-$t.csv" -buff_size "$SIPP_BUF" \
        -nostdin -trace_logs -log_file "$log") >/dev/null 2>>"$work/sipp.log" &
    UAS_TPID=$!
    UAS_OK=0
    for i in $(seq 1 100); do
        if grep -q '^registered' "$log" 2>/dev/null; then UAS_OK=1; break; fi
        kill -0 "$UAS_TPID" 2>/dev/null || break
        sleep 0.1
    done
    UAS_PID="$(bench_tree "$UAS_TPID" | sed -n 2p)"
}

stop_callee() {
    bench_stop "$UAS_TPID" 2
    wait "$UAS_TPID" 2>/dev/null || true
    UAS_TPID="" UAS_PID=""
}

# run_uac TRANSPORT PORT RATE CALLS STATFILE ERRFILE: the callers, bounded by -timeout and
# timeout(1). Sets SIPP_RC and SIPP_CPU_CS (sipp's user+sys in 1/100 s).
run_uac() {
    local t="$1" port="$2" rate="$3" calls="$4" stat="$5" err="$6" secs
    secs=$((calls / rate + RECV_TIMEOUT_MS / 1000 + 10))
    bench_wait_port_free "$UAC_PORT"
    bench_sipp_run "$secs" -sf "$SCEN/call_uac.xml" "127.0.0.1:$port" \
        -s "$(callee_of "$t")" -t "$t" -i 127.0.0.1 -p "$UAC_PORT" -mp "$(media_port)" -r "$rate" -m "$calls" \
        -d 0 -inf "$work/callers.csv" -recv_timeout "$RECV_TIMEOUT_MS" -timeout "${secs}s" -buff_size "$SIPP_BUF" \
        -nostdin -trace_stat -stf "$stat" -fd 1 -trace_err -error_file "$err" -max_log_size 20000000
}

# run_step SERVER CONFIG TRANSPORT RATE [KIND]: one step; appends a row to steps.tsv and
# sets STEP_PASS (1/0). KIND: step (a rate of a series), cpu (the fixed-rate step), probe.
run_step() {
    local server="$1" config="$2" t="$3" rate="$4" kind="${5:-step}" calls stat err uaslog
    local ov0=0 ov1=0 lh0=0 lh1=0 u0=0 u1=0 byes
    STEP_SEQ=$((STEP_SEQ + 1))
    bench_step_server "$server"
    calls=$((rate * HOLD))
    if [ "$kind" = probe ]; then calls=$((rate * 2)); fi
    stat="$work/stat-$server-$config-$t-$rate-$RANDOM.csv"
    err="$work/err-$server-$config-$t-$rate-$RANDOM.log"
    uaslog="$work/uas-$STEP_SEQ.log"

    start_callee "$t" "$STEP_PORT" "$uaslog"
    if [ "$UAS_OK" != 1 ]; then
        stop_callee
        bench_log "$server -t $t: the callee did not register within 10 s"
        STEP_ROW="$(printf '%s\t%s\t%s\t%s\t%d\t%d\t%d\t0\t0\t0\t0.000\t0\t0\t0.00\t0.0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0\t0.00\tcallee_not_registered\t-\t-\t%d' \
            "$server" "$config" "$t" "$kind" "$rate" "$HOLD" "$calls" "$STEP_SEQ")"
        printf '%s\n' "$STEP_ROW" >>"$steps_tsv"
        STEP_PASS=0
        return
    fi
    if [ "$server" = holdfast ]; then
        ov0="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh0="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
    fi
    u0="$(bench_cpu_ticks "$UAS_PID")"
    bench_measure_begin

    run_uac "$t" "$STEP_PORT" "$rate" "$calls" "$stat" "$err"

    bench_measure_end
    u1="$(bench_cpu_ticks "$UAS_PID")"
    if [ "$server" = holdfast ]; then
        ov1="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh1="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
    fi
    sleep 0.5 # the last BYEs' log lines
    byes="$(grep -c '^bye ' "$uaslog" 2>/dev/null || true)"
    stop_callee
    rm -f "$uaslog"

    local created succ failed retr achieved reasons codes
    read -r created succ failed retr achieved <<<"$(bench_sipp_stats "$stat" "$calls")"
    reasons="$(bench_sipp_fail_reasons "$stat")"
    codes="$(bench_sipp_unexpected "$err")"
    # sipp's error log of a step with failures is kept in OUT/sipp-errors.
    if [ -s "$err" ]; then mkdir -p "$OUT/sipp-errors" && cp "$err"* "$OUT/sipp-errors/" 2>/dev/null || true; fi
    rm -f "$err"*

    STEP_END_TICKS="$M_C1" STEP_END_S="$(date +%s)" STEP_PIDS="${STEP_PID_LIST[*]}"
    STEP_ROW="$(awk -v server="$server" -v config="$config" -v t="$t" -v kind="$kind" -v rate="$rate" -v hold="$HOLD" \
        -v calls="$calls" -v created="$created" -v succ="$succ" -v failed="$failed" -v ach="$achieved" \
        -v retr="$retr" -v cpu="$M_CPU" -v tck="$clk_tck" -v scs="$SIPP_CPU_CS" -v wall="$M_WALL" \
        -v idle="$M_IDLE" -v wt="$M_WALL_TICKS" -v ncpu="$ncpu" -v rcv="$M_RCV" \
        -v dr="$M_DR" -v ov=$((ov1 - ov0)) -v lh=$((lh1 - lh0)) -v byes="${byes:-0}" -v ucpu=$((u1 - u0)) \
        -v rc="$SIPP_RC" -v reasons="$reasons" -v codes="$codes" -v id="$STEP_SEQ" 'BEGIN {
            if (kind == "probe") hold = 2
            pct = calls ? 100 * succ / calls : 0
            cpu_s = cpu / tck
            us = succ ? cpu_s * 1e6 / succ : 0
            sipp_pct = wall ? 100 * (scs / 100) / (wall / 1e9) : 0
            uas_pct = wall ? 100 * (ucpu / tck) / (wall / 1e9) : 0
            busy = wt ? 100 * (1 - idle / (ncpu * wt)) : 0
            if (busy < 0) busy = 0
            pass = (succ * 1000 >= calls * 999 && ach * 100 >= rate * 95) ? 1 : 0
            # processors kept busy by everything else on the host (other builds, fuzzers)
            other = wall ? busy / 100 * ncpu - (cpu_s + scs / 100 + ucpu / tck) / (wall / 1e9) : 0
            if (other < 0) other = 0
            printf "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%d\t%d\t%.2f\t%.1f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%d\t%.0f\t%d\t%d\t%.2f\t%s\t%s\t-\t%d\n",
                server, config, t, kind, rate, hold, calls, created, succ, failed, pct, ach, retr, cpu_s, us,
                sipp_pct, busy, rcv, dr, ov, lh, byes, uas_pct, rc, pass, other, reasons, codes, id
        }')"
    printf '%s\n' "$STEP_ROW" >>"$steps_tsv"
    STEP_PASS="$(cut -f$COL_PASS <<<"$STEP_ROW")"
    awk -F'\t' '{ printf "  %-8s %-5s %-3s %-5s %6d/s: %7.3f %% ok, achieved %6d/s, retrans %d, callee saw %d BYEs, server %.2f s CPU = %.1f us/call, sipp caller %s %% / callee %s %% CPU, host busy %s %% (others %.1f cores)%s%s%s -> %s\n",
        $1, $2, $3, $4, $5, $11, $12, $13, $22, $14, $15, $16, $23, $17, $26,
        ($1 == "holdfast" ? sprintf(", 503 (overloaded) +%d, limit hits +%d", $20, $21) : ""),
        (($18 + $19) > 0 ? sprintf(", udp rcvbuf errors +%d (server socket +%d)", $18, $19) : ""),
        ($27 != "-" ? ", failed: " $27 "; unexpected " $28 : ""),
        ($25 ? "pass" : "FAIL") }' <<<"$STEP_ROW" >&2
    bench_after_step "$server" "$config" "$kind"
}

# ---------------------------------------------------------------- the run
fsync_ms="$(bench_fsync_ms "$work")"
bench_log "machine: $ncpu cores, $(uname -r); $load_start; $work on $(bench_fs_of "$work"), ${fsync_ms:-?} ms per 4 kB O_DSYNC write"
bench_log "steps: from $START/s x$FACTOR up to $MAX/s, $HOLD s each, retry=$RETRY refine=$REFINE; CPU at $CPU_RATE/s or the lower of the two best rates; $USERS callers; Kamailio NCHILD in: $NCHILD"
if has_server holdfast; then
    hf_start
    hf_add_users
fi
if has_server kamailio; then kam_make_db; fi

bench_race
hf_stop_metrics=""
hf_records="-"
hf_calls=0
if has_server holdfast; then
    hf_stop_metrics="$(curl -s --max-time 2 "$HF_METRICS" | grep -v '^#' | awk '$2 != 0' || true)"
    hf_calls="$(awk -F'\t' 'NR > 1 && $1 == "holdfast" { s += $9 } END { print s + 0 }' "$steps_tsv")"
    bench_log "holdfast: counting its call records ($hf_calls calls succeeded in all its steps)"
    hf_records="$(hf_cdr_count)"
fi
load_end="$(bench_load)"
elapsed=$(($(date +%s) - t_start))

# ---------------------------------------------------------------- the table
# fail_note SERVER TRANSPORT: what the first failing step of a series showed.
fail_note() {
    awk -F'\t' -v s="$1" -v t="$2" -v p="$COL_PASS" '$1 == s && $3 == t && $4 == "step" && $p == 0 {
        printf "first failing step %d/s (%s): %.3f %% ok, achieved %d/s, %d retransmissions, callee saw %d BYEs, server UDP socket drops %d", $5, $2, $11, $12, $13, $22, $19
        if (s == "holdfast") printf ", 503 (holdfast_overloaded_total) +%d, holdfast_limit_hits_total +%d", $20, $21
        printf ", sipp failures %s, unexpected responses %s, sipp CPU caller %d %% callee %d %%, others on the host %.1f cores\n", $27, $28, $16, $23, $26
        exit }' "$steps_tsv"
}
# sipp's CPU (caller / callee) at a series' highest passing step: near 100 % the race
# measures sipp.
sipp_at() {
    awk -F'\t' -v s="$1" -v t="$2" -v r="$3" -v p="$COL_PASS" '$1 == s && $3 == t && $5 == r && $p == 1 { x = $16 " / " $23 } END { print (x == "" ? "-" : x) }' "$steps_tsv"
}

table="$OUT/table.md"
{
    echo "Calls through the proxy (INVITE, 407, ACK, INVITE with Proxy-Authorization, 100, 180, 200, ACK, BYE, 200; Record-Route; no hold time), $USERS callers, one registered sipp callee per transport; sipp stepping from $START/s x$FACTOR (${HOLD} s per step, >= 99.9 % successful and >= 95 % of the offered rate achieved); CPU per call at one fixed rate per transport"
    echo "$started_at; $ncpu cores; $(uname -r); at start: $load_start; at end: $load_end; run took $((elapsed / 60)) min $((elapsed % 60)) s"
    echo "holdfast: $HF_LABEL; data on $(bench_fs_of "$work") (${fsync_ms:-?} ms per 4 kB O_DSYNC write)"
    echo
    echo "| transport | holdfast max calls/s | Kamailio max calls/s | ratio hf/kam | CPU measured at | holdfast CPU µs/call | Kamailio CPU µs/call | ratio hf/kam |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    bench_table_rows
    echo
    bench_table_rounds
    for t in $TRANSPORTS; do
        echo "- -t $t: Kamailio's best NCHILD ${KAMN[$t]}; sipp CPU (caller / callee, % of a processor) at the best step: holdfast $(sipp_at holdfast "$t" "${MAXRATE[holdfast,$t]}"), Kamailio $(sipp_at kamailio "$t" "${MAXRATE[kamailio,$t]}") (near 100 % sipp is the limit, not the server)"
    done
    bench_table_failures
    echo "- CPU µs/call: the server's utime+stime over the fixed-rate step (Kamailio with its best NCHILD, all its processes) per successful call$([ "$TAIL" = 1 ] && echo "; over UDP plus what it used in the ${TAIL_S} s after the step (tails in steps.tsv, tail_cpu_s)"). '*' = the fixed-rate step did not pass."
    if has_server holdfast; then
        echo "- holdfast: a call record for every call, written durably (its default); /api/v1/cdrs lists $hf_records records at the end for $hf_calls successful sipp calls (every step, failed ones included, leaves records too); max_transactions $HF_MAX_TX, nonce_lifetime_secs $HF_NONCE_LIFETIME."
    fi
    echo "- Kamailio: kamailio-bench.cfg with credentials in SQLite (db_sqlite, subscriber table with its username index), location in memory (usrloc db_mode 0), no call records."
    echo "- Steps: $steps_tsv"
} >"$table"
echo
cat "$table"
if [ -n "$hf_stop_metrics" ]; then
    echo
    echo "holdfast counters at the end (non-zero; since its restart before the CPU steps):"
    sed 's/^/  /' <<<"$hf_stop_metrics"
fi
