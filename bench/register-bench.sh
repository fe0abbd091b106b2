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
# Environment (defaults for the full run, about 15 minutes on 2 cores):
#   START=2000 FACTOR=1.5 MAX=60000     offered registrations per second: START, then
#                                       each step FACTOR times the last (rounded to 500)
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
#   HF_CORE_SHARDS=0                    [sip] core_shards for holdfast (0: one per processor)
#   HF_DIGEST_ALGORITHMS=               [registrar] digest_algorithms for holdfast, e.g. '["MD5"]' (default: its own)
#   SIPP_ARGS=                          more sipp arguments for every step, e.g. '-trace_msg' (split on spaces)
#   HOLDFAST_BIN=                       a holdfast binary to race instead of building one
#   HF_LABEL=                           its name in the table (default: "tree", or the path)
#   KAMAILIO=/usr/sbin/kamailio  SIPP=sipp
#   OUT=target/register-bench           where steps.tsv, table.md and the logs are kept
#
# holdfast's digest layer remembers the nonce-count of every nonce it has seen for the
# nonce lifetime, at most [registrar] max_tracked_nonces at once (2,000,000; past that it
# answers stale 401s), so with its default lifetime of 300 s it sustains at most 6,666
# new nonces/s; a bench run
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
    : "${START:=2000}" "${FACTOR:=2}" "${HOLD:=4}" "${RETRY:=0}" "${REFINE:=0}" "${NCHILD:=4}" "${ROUNDS:=1}"
fi
START="${START:-2000}"
FACTOR="${FACTOR:-1.5}"
MAX="${MAX:-60000}"
HOLD="${HOLD:-8}"
RETRY="${RETRY:-1}"
ROUNDS="${ROUNDS:-2}"
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
read -r -a SIPP_ARGV <<<"${SIPP_ARGS:-}"
# sipp's own socket buffers default to 64 kB: at thousands of messages a second its UDP
# socket then drops responses (and a TCP peer's window stalls), which reads as the
# server's failure. 4 MB is the kernel's rmem_max/wmem_max here.
SIPP_BUF=4194304
DOMAIN=127.0.0.1
PW_PREFIX="pw-"

TAIL=1

bench_kb_dir
KAM_CFG="$kb_dir/kamailio-bench.cfg"
SCENARIO="$kb_dir/scenarios/register.xml"
[ -r "$KAM_CFG" ] || bench_die "missing $KAM_CFG"
[ -r "$SCENARIO" ] || bench_die "missing $SCENARIO"
bench_need "$SIPP" curl ss timeout awk
if has_server kamailio; then bench_need_kam_sqlite; fi
case "$SIPP_PORT" in 508[0-9] | 509[0-9]) ;; *) bench_die "SIPP_PORT must be in 5080-5099 (Kamailio's cfg stores only those contacts)" ;; esac
for p in "$HF_PORT" "$KAM_PORT" "$SIPP_PORT"; do
    bench_port_busy "$p" && bench_die "port $p is in use; stop what uses it (or set HF_PORT / SIPP_PORT)"
done
[ "$HF_PORT" != "$SIPP_PORT" ] || bench_die "HF_PORT and SIPP_PORT must differ"

bench_workdir register-bench
users_csv="$work/users.csv"
bench_users_csv "$users_csv" "$USERS" u "$PW_PREFIX"

# ---------------------------------------------------------------- processes, cleanup
bench_traps ADD_PID SIPP_TPID

# ---------------------------------------------------------------- holdfast
bench_hf_label
HF_DATA="$work/holdfast-data"
HF_TOKEN="register-bench-$RANDOM$RANDOM$RANDOM"
if has_server holdfast; then
    bench_hf_bin
    bench_hf_registrar_config "# register-bench: loopback only, per-IP limits out of the way, no bans (one source IP)." \
        "# each authenticated UDP REGISTER's transaction lingers 64*T1 = 32 s after its answer (the 401 is sent without a transaction)"
fi

hf_start() { bench_hf_start_data; }

# holdfast's 500s (a binding that could not be stored) are logged, not counted.
hf_500s() { grep -c 'binding not stored' "$work/holdfast.log" 2>/dev/null || true; }

# ---------------------------------------------------------------- Kamailio
KAM_DB="$work/kamailio.sqlite"
kam_start() { bench_kam_start_sqlite "$1"; }

# ---------------------------------------------------------------- one sipp step
printf 'server\tconfig\ttransport\tkind\trate\thold\tcalls\tcreated\tsuccessful\tfailed\tsuccess_pct\tachieved_rate\tretrans\tsrv_cpu_s\tsrv_cpu_us_per_reg\tsipp_cpu_pct\thost_busy_pct\tudp_rcvbuf_errors\tsrv_udp_sock_drops\thf_overloaded_503\thf_limit_hits\thf_write_queue_hits\thf_500\tsipp_rc\tpass\tother_cores\tfail_reasons\tunexpected_codes\ttail_cpu_s\tid\n' >"$steps_tsv"
COL_KIND=4 COL_RATE=5 COL_US=15 COL_PASS=25
STEP_SEQ=0
BENCH_UNIT=500

# run_sipp TRANSPORT PORT RATE CALLS STATFILE ERRFILE: one sipp, bounded by -timeout and
# timeout(1). Sets SIPP_RC and SIPP_CPU_CS (sipp's user+sys in 1/100 s).
run_sipp() {
    local t="$1" port="$2" rate="$3" calls="$4" stat="$5" err="$6" secs
    secs=$((calls / rate + RECV_TIMEOUT_MS / 1000 + 10))
    # the last sipp's socket must be gone (a TCP TIME_WAIT does not count)
    bench_wait_port_free "$SIPP_PORT"
    bench_sipp_run "$secs" -sf "$SCENARIO" "127.0.0.1:$port" \
        -t "$t" -i 127.0.0.1 -p "$SIPP_PORT" -r "$rate" -m "$calls" -inf "$users_csv" \
        -recv_timeout "$RECV_TIMEOUT_MS" -timeout "${secs}s" -buff_size "$SIPP_BUF" \
        -nostdin -trace_stat -stf "$stat" -fd 1 -trace_err -error_file "$err" -max_log_size 20000000 "${SIPP_ARGV[@]}"
}

# run_step SERVER CONFIG TRANSPORT RATE [KIND]: one step; appends a row to steps.tsv and
# sets STEP_PASS (1/0). KIND: step (a rate of a series), cpu (the fixed-rate step), probe.
run_step() {
    local server="$1" config="$2" t="$3" rate="$4" kind="${5:-step}" calls stat err
    local ov0=0 ov1=0 lh0=0 lh1=0 wq0=0 wq1=0 e0=0 e1=0
    STEP_SEQ=$((STEP_SEQ + 1))
    bench_step_server "$server"
    calls=$((rate * HOLD))
    if [ "$kind" = probe ]; then calls=$((rate * 2)); fi
    stat="$work/stat-$server-$config-$t-$rate-$RANDOM.csv"
    err="$work/err-$server-$config-$t-$rate-$RANDOM.log"
    if [ "$server" = holdfast ]; then
        ov0="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh0="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
        wq0="$(bench_metric_series "$HF_METRICS" 'holdfast_limit_hits_total{limit="write_queue"}')"
        e0="$(hf_500s)"
    fi
    bench_measure_begin

    run_sipp "$t" "$STEP_PORT" "$rate" "$calls" "$stat" "$err"

    bench_measure_end
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

    STEP_END_TICKS="$M_C1" STEP_END_S="$(date +%s)" STEP_PIDS="${STEP_PID_LIST[*]}"
    STEP_ROW="$(awk -v server="$server" -v config="$config" -v t="$t" -v kind="$kind" -v rate="$rate" -v hold="$HOLD" \
        -v calls="$calls" -v created="$created" -v succ="$succ" -v failed="$failed" -v ach="$achieved" \
        -v retr="$retr" -v cpu="$M_CPU" -v tck="$clk_tck" -v scs="$SIPP_CPU_CS" -v wall="$M_WALL" \
        -v idle="$M_IDLE" -v wt="$M_WALL_TICKS" -v ncpu="$ncpu" -v rcv="$M_RCV" \
        -v dr="$M_DR" -v ov=$((ov1 - ov0)) -v lh=$((lh1 - lh0)) -v wq=$((wq1 - wq0)) -v e5=$((e1 - e0)) \
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
    bench_after_step "$server" "$config" "$kind"
}

# ---------------------------------------------------------------- the run
fsync_ms="$(bench_fsync_ms "$work")"
bench_log "machine: $ncpu cores, $(uname -r); $load_start; $work on $(bench_fs_of "$work"), ${fsync_ms:-?} ms per 4 kB O_DSYNC write"
bench_log "steps: from $START/s x$FACTOR up to $MAX/s, $HOLD s each, retry=$RETRY refine=$REFINE; CPU at $CPU_RATE/s or the lower of the two best rates; $USERS users; Kamailio NCHILD in: $NCHILD"
if has_server holdfast; then
    hf_start
    bench_hf_add_users 32
fi
if has_server kamailio; then bench_kam_make_db 1; fi

bench_race
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
    bench_table_rows
    echo
    bench_table_rounds
    for t in $TRANSPORTS; do
        echo "- -t $t: Kamailio's best NCHILD ${KAMN[$t]}; at the best step sipp used holdfast $(sipp_at holdfast "$t" "${MAXRATE[holdfast,$t]}") %, Kamailio $(sipp_at kamailio "$t" "${MAXRATE[kamailio,$t]}") % of a processor (near 100 % sipp is the limit, not the server) and retransmitted holdfast $(retr_at holdfast "$t" "${MAXRATE[holdfast,$t]}"), Kamailio $(retr_at kamailio "$t" "${MAXRATE[kamailio,$t]}") times"
    done
    bench_table_failures
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
    echo "holdfast counters at the end (non-zero; since its restart before the CPU steps):"
    sed 's/^/  /' <<<"$hf_stop_metrics"
fi
