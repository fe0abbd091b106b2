#!/usr/bin/env bash
# OPTIONS over UDP and TCP: holdfast against Kamailio, side by side in one run on this
# machine, driven by sipp. For each server and transport (sipp -t u1, -t t1) the offered
# OPTIONS rate is stepped up (each step held HOLD seconds, -m = rate * HOLD) to find the
# highest rate at >= 99.9 % successful calls; every step also records the server's CPU
# time (utime+stime from /proc/PID/stat of every process of the server), so at one fixed
# rate that both sustain (CPU_RATE, or the lower of the two best rates when that is
# lower) the CPU microseconds per transaction are compared.
# The bench reports; it never fails on timings (exit 2 only when it cannot run at all).
#
# Usage: bench/options-bench.sh [--quick] [--no-build] [--kamailio-bench DIR]
#   --quick             a short run (~2-3 min): fewer, shorter steps, Kamailio NCHILD=4 only
#   --no-build          use the existing target/release/holdfast
#   --kamailio-bench D  Kamailio's bench cfg and sipp scenarios (default: env
#                       KAMAILIO_BENCH_DIR, else ../shared/interop/kamailio-bench from the
#                       repo root): kamailio-bench.cfg and scenarios/options.xml are used.
#
# Environment (defaults for the full run, about 8-10 minutes on 2 cores):
#   START=10000 STEP=10000 MAX=150000   offered rates, calls per second
#   HOLD=10                             seconds per step
#   RETRY=1                             repeat a failing step once before giving up
#   REFINE=1                            one more step halfway between the last pass and the fail
#   NCHILD="2 4 8"                      Kamailio children / tcp_children to try (best kept)
#   CPU_RATE=20000                      the fixed rate for CPU per transaction (at most)
#   TRANSPORTS="u1 t1"                  sipp transports
#   SERVERS="holdfast kamailio"         which servers to race (one alone for experiments)
#   HF_PORT=5090                        holdfast's SIP port (Kamailio's is 5080, set by its cfg)
#   HF_WRITE_QUEUE=                     [limits] write_queue for holdfast (default: its own, 512)
#   HF_T1_MS=                           [timers] t1_ms for holdfast (default: its own, 500); a
#                                       UDP server transaction lingers 64*T1 after its answer
#   KAMAILIO=/usr/sbin/kamailio  SIPP=sipp
#   OUT=target/options-bench            where steps.tsv, table.md and the logs are kept
#
# Needs: sipp (Debian `sip-tester`), kamailio (Debian `kamailio`), curl, ss, cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

bench_parse_args "$@"

if [ "$quick" = 1 ]; then
    : "${START:=20000}" "${STEP:=20000}" "${HOLD:=4}" "${RETRY:=0}" "${REFINE:=0}" "${NCHILD:=4}"
fi
START="${START:-10000}"
STEP="${STEP:-10000}"
MAX="${MAX:-150000}"
HOLD="${HOLD:-10}"
RETRY="${RETRY:-1}"
REFINE="${REFINE:-1}"
NCHILD="${NCHILD:-2 4 8}"
CPU_RATE="${CPU_RATE:-20000}"
TRANSPORTS="${TRANSPORTS:-u1 t1}"
SERVERS="${SERVERS:-holdfast kamailio}"
HF_PORT="${HF_PORT:-5090}"
HF_WRITE_QUEUE="${HF_WRITE_QUEUE:-}"
HF_T1_MS="${HF_T1_MS:-}"
KAM_PORT=5080
KAMAILIO="${KAMAILIO:-/usr/sbin/kamailio}"
SIPP="${SIPP:-sipp}"
OUT="${OUT:-$root/target/options-bench}"
RECV_TIMEOUT_MS=3000
# sipp's own socket buffers default to 64 kB: at tens of thousands of responses a second
# its UDP socket then drops responses (and a TCP peer's window stalls), which reads as
# the server's failure. 4 MB is the kernel's rmem_max/wmem_max here.
SIPP_BUF=4194304

bench_kb_dir
KAM_CFG="$kb_dir/kamailio-bench.cfg"
SCENARIO="$kb_dir/scenarios/options.xml"
[ -r "$KAM_CFG" ] || bench_die "missing $KAM_CFG"
[ -r "$SCENARIO" ] || bench_die "missing $SCENARIO"
bench_need "$SIPP" "$KAMAILIO" curl ss timeout awk
for p in "$HF_PORT" "$KAM_PORT"; do
    bench_port_busy "$p" && bench_die "port $p is in use; stop what uses it (or set HF_PORT)"
done

bench_workdir options-bench

# ---------------------------------------------------------------- processes, cleanup
bench_traps SIPP_TPID

# ---------------------------------------------------------------- holdfast
bench_hf_bin

admin_port="$(bench_free_port)"
HF_METRICS="http://127.0.0.1:$admin_port/metrics"
cat >"$work/holdfast.toml" <<EOF
# options-bench: loopback only, per-IP limits out of the way, no bans (one source IP).
[sip]
listen = ["udp:127.0.0.1:$HF_PORT", "tcp:127.0.0.1:$HF_PORT"]

[limits]
messages_per_sec_per_ip = 1000000
message_burst_per_ip = 1000000
${HF_WRITE_QUEUE:+write_queue = $HF_WRITE_QUEUE}

[timers]
${HF_T1_MS:+t1_ms = $HF_T1_MS}

[bans]
enabled = false

[admin]
listen = "127.0.0.1:$admin_port"

[log]
level = "warn"
EOF
HF_CONFIG_TAG="hf${HF_WRITE_QUEUE:+-wq$HF_WRITE_QUEUE}${HF_T1_MS:+-t1_$HF_T1_MS}"
"$HF_BIN" check-config "$work/holdfast.toml" >/dev/null || bench_die "holdfast rejects the bench config"

hf_start() { bench_hf_start "metrics $HF_METRICS"; }

# ---------------------------------------------------------------- Kamailio
kam_start() {
    local n="$1" d="$work/kam-$1"
    mkdir -p "$d/dbtext"
    # auth_db needs its table even though OPTIONS never reach it
    printf 'id(int,auto) table_name(string) table_version(int) \n0:subscriber:7\n' >"$d/dbtext/version"
    printf 'id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null) \n' >"$d/dbtext/subscriber"
    bench_kam_start "$n" "" -A "DBURL=\"text://$d/dbtext\""
}

# holdfast keeps a UDP server transaction 64*T1 (32 s) after its answer, in a table of
# 100,000 (holdfast-core's default, not configurable): past that it answers 503 and
# counts holdfast_overloaded_total. Its sustained UDP ceiling is therefore
# 100,000 / (64*T1) = 3,125/s whatever the CPU; a step that follows a fast one starts
# with the table still full. HF_LINGER_S is how long an emptied table takes.
HF_TX_TABLE=100000
HF_LINGER_S=$(((64 * ${HF_T1_MS:-500} + 999) / 1000 + 1))
HF_LAST_OVERLOADED=0 HF_LAST_END=0

# ---------------------------------------------------------------- one sipp step
printf 'server\tconfig\ttransport\trate\thold\tcalls\tcreated\tsuccessful\tfailed\tsuccess_pct\tachieved_rate\tretrans\tsrv_cpu_s\tsrv_cpu_us_per_txn\tsipp_cpu_pct\thost_busy_pct\tudp_rcvbuf_errors\tsrv_udp_sock_drops\thf_overloaded\thf_limit_hits\thf_write_queue_hits\tsipp_rc\tpass\tother_cores\tfail_reasons\n' >"$steps_tsv"

# run_sipp TRANSPORT PORT RATE CALLS STATFILE: one sipp, bounded by -timeout and timeout(1).
# Sets SIPP_RC and SIPP_CPU_CS (sipp's user+sys in 1/100 s).
run_sipp() {
    local t="$1" port="$2" rate="$3" calls="$4" stat="$5" lport secs
    lport="$(bench_free_port)"
    secs=$((calls / rate + RECV_TIMEOUT_MS / 1000 + 10))
    bench_sipp_run "$secs" -sf "$SCENARIO" "127.0.0.1:$port" \
        -t "$t" -i 127.0.0.1 -p "$lport" -r "$rate" -m "$calls" \
        -recv_timeout "$RECV_TIMEOUT_MS" -timeout "${secs}s" -buff_size "$SIPP_BUF" \
        -nostdin -trace_stat -stf "$stat" -fd 1
}

# run_step SERVER CONFIG TRANSPORT RATE: one held step; appends a row to steps.tsv and
# sets STEP_PASS (1/0) and STEP_ROW.
run_step() {
    local server="$1" config="$2" t="$3" rate="$4"
    local calls stat ov0=0 ov1=0 lh0=0 lh1=0 wq0=0 wq1=0
    if [ "$server" = holdfast ] && [ "$HF_LAST_OVERLOADED" -gt 0 ]; then
        # the last step filled holdfast's transaction table: let it empty, or this
        # step (a retry, a lower rate) would only measure what the last one left
        local wait_s=$((HF_LAST_END + HF_LINGER_S - $(date +%s)))
        if [ "$wait_s" -gt 0 ]; then
            bench_log "holdfast's transaction table was full: waiting ${wait_s} s for it to empty"
            sleep "$wait_s"
        fi
    fi
    calls=$((rate * HOLD))
    stat="$work/stat-$server-$config-$t-$rate-$RANDOM.csv"
    bench_step_server "$server"
    if [ "$server" = holdfast ]; then
        ov0="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh0="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
        wq0="$(bench_metric_series "$HF_METRICS" 'holdfast_limit_hits_total{limit="write_queue"}')"
    fi
    bench_measure_begin

    run_sipp "$t" "$STEP_PORT" "$rate" "$calls" "$stat"

    bench_measure_end
    if [ "$server" = holdfast ]; then
        ov1="$(bench_metric "$HF_METRICS" holdfast_overloaded_total)"
        lh1="$(bench_metric "$HF_METRICS" holdfast_limit_hits_total)"
        wq1="$(bench_metric_series "$HF_METRICS" 'holdfast_limit_hits_total{limit="write_queue"}')"
    fi

    # why calls failed, from sipp's own counters (last row; in mawk's for-in order, as
    # this bench always listed them)
    local reasons="-"
    if [ -s "$stat" ]; then
        reasons="$(awk -F';' 'NR > 1 && NF > 60 { r = $0 } END {
                n = split(r, f, ";")
                split("22:udp_max_retrans 24:tcp_connect 26:tcp_closed 28:unexpected_msg 42:recv_timeout 20:cannot_send", k, " ")
                out = ""
                for (i in k) { split(k[i], kv, ":"); if (f[kv[1]] + 0 > 0) out = out (out == "" ? "" : ",") kv[2] "=" f[kv[1]] }
                print (out == "" ? "-" : out) }' "$stat")"
    fi
    local created succ failed retr achieved
    read -r created succ failed retr achieved <<<"$(bench_sipp_stats "$stat" "$calls")"

    STEP_ROW="$(awk -v server="$server" -v config="$config" -v t="$t" -v rate="$rate" -v hold="$HOLD" \
        -v calls="$calls" -v created="$created" -v succ="$succ" -v failed="$failed" -v ach="$achieved" \
        -v retr="$retr" -v cpu="$M_CPU" -v tck="$clk_tck" -v scs="$SIPP_CPU_CS" -v wall="$M_WALL" \
        -v idle="$M_IDLE" -v wt="$M_WALL_TICKS" -v ncpu="$ncpu" -v rcv="$M_RCV" \
        -v dr="$M_DR" -v ov=$((ov1 - ov0)) -v lh=$((lh1 - lh0)) -v wq=$((wq1 - wq0)) -v rc="$SIPP_RC" \
        -v reasons="$reasons" 'BEGIN {
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
            printf "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.3f\t%d\t%d\t%.2f\t%.1f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%s\n",
                server, config, t, rate, hold, calls, created, succ, failed, pct, ach, retr, cpu_s, us,
                sipp_pct, busy, rcv, dr, ov, lh, wq, rc, pass, other, reasons
        }')"
    printf '%s\n' "$STEP_ROW" >>"$steps_tsv"
    if [ "$server" = holdfast ]; then
        HF_LAST_OVERLOADED=$((ov1 - ov0))
        HF_LAST_END="$(date +%s)"
    fi
    STEP_PASS="$(cut -f23 <<<"$STEP_ROW")"
    awk -F'\t' '{ printf "  %-8s %-5s %-3s %6d/s: %7.3f %% ok, achieved %6d/s, retrans %d, server %.2f s CPU = %.1f us/txn, sipp %s %% CPU, host busy %s %% (others %.1f cores)%s -> %s\n",
        $1, $2, $3, $4, $10, $11, $12, $13, $14, $15, $16, $24,
        ($1 == "holdfast" ? sprintf(", overloaded +%d, limit hits +%d (write_queue +%d)", $19, $20, $21) : "") \
        (($17 + $18) > 0 ? sprintf(", udp rcvbuf errors +%d (server socket +%d)", $17, $18) : "") \
        ($25 != "-" ? ", failed: " $25 : ""),
        ($23 ? "pass" : "FAIL") }' <<<"$STEP_ROW" >&2
}

# (this bench's own warm-up, try_rate, series, hf_series and cpu_step: they replace
# lib.sh's, which step by a factor and probe first)
warmup() {
    local port="$1" t="$2"
    run_sipp "$t" "$port" 1000 1000 "$work/warmup-$RANDOM.csv"
}

# try_rate SERVER CONFIG TRANSPORT RATE: one step, repeated once on failure with RETRY=1
# (not when holdfast's transaction table overflowed: that is arithmetic, not noise).
try_rate() {
    run_step "$@"
    if [ "$STEP_PASS" != 1 ] && [ "$RETRY" = 1 ] &&
        ! { [ "$1" = holdfast ] && [ "$HF_LAST_OVERLOADED" -gt 0 ]; }; then
        run_step "$@"
    fi
    [ "$STEP_PASS" = 1 ]
}

# series SERVER CONFIG TRANSPORT FIRST_RATE [DOWN]: step up from FIRST_RATE until a step
# fails (after RETRY); with DOWN=1 (the default) and a failing first step, halve the
# rate until one passes (down to 1000/s); with REFINE, one step halfway between the
# best pass and the lowest fail. Sets SERIES_BEST (0: nothing passed).
# (Not run in $(...): the EXIT trap must see the sipp it starts.)
series() {
    local server="$1" config="$2" t="$3" rate="$4" down="${5:-1}" best=0 fail=0 port
    if [ "$server" = holdfast ]; then port="$HF_PORT"; else port="$KAM_PORT"; fi
    warmup "$port" "$t"
    while [ "$rate" -le "$MAX" ]; do
        if try_rate "$server" "$config" "$t" "$rate"; then
            best="$rate"
            rate=$((rate + STEP))
        else
            fail="$rate"
            break
        fi
    done
    if [ "$down" = 1 ] && [ "$best" = 0 ] && [ "$fail" -gt 0 ]; then
        rate=$((fail / 2 / 1000 * 1000))
        while [ "$rate" -ge 1000 ]; do
            if try_rate "$server" "$config" "$t" "$rate"; then best="$rate"; break; fi
            fail="$rate"
            rate=$((rate / 2 / 1000 * 1000))
        done
    fi
    if [ "$REFINE" = 1 ] && [ "$best" -gt 0 ] && [ "$fail" -gt 0 ]; then
        local mid=$(((best + fail) / 2 / 1000 * 1000))
        if [ "$mid" -gt "$best" ]; then
            run_step "$server" "$config" "$t" "$mid"
            if [ "$STEP_PASS" = 1 ]; then best="$mid"; fi
        fi
    fi
    SERIES_BEST="$best"
}

# ---------------------------------------------------------------- the run
bench_log "machine: $ncpu cores, $(uname -r); $load_start"
bench_log "steps: from $START by $STEP up to $MAX/s, $HOLD s each, retry=$RETRY refine=$REFINE; CPU at $CPU_RATE/s or the lower of the two best rates; Kamailio NCHILD in: $NCHILD"
hf_start

for t in $TRANSPORTS; do KAMN[$t]="-"; MAXRATE[kamailio,$t]=0; MAXRATE[holdfast,$t]=0; done

hf_series_end=0

hf_series() {
    bench_log "holdfast -t $1: stepping from $START/s"
    series holdfast "$HF_CONFIG_TAG" "$1" "$START"
    MAXRATE[holdfast,$1]="$SERIES_BEST"
    hf_series_end="$(date +%s)"
}

# cpu_step SERVER CONFIG TRANSPORT: the fixed-rate step, unless this configuration
# already passed one at that rate.
cpu_step() {
    local r="${CPURATE[$3]}" wait_s
    if awk -F'\t' -v s="$1" -v c="$2" -v t="$3" -v r="$r" \
        '$1 == s && $2 == c && $3 == t && $4 == r && $23 == 1 { f = 1 } END { exit !f }' "$steps_tsv"; then
        return 0
    fi
    if [ "$1" = holdfast ] && [ "$3" = u1 ]; then
        wait_s=$((hf_series_end + HF_LINGER_S - $(date +%s)))
        if [ "$wait_s" -gt 0 ]; then
            bench_log "waiting ${wait_s} s for holdfast's UDP transactions to expire"
            sleep "$wait_s"
        fi
    fi
    bench_log "$1 -t $3: CPU at $r/s"
    run_step "$1" "$2" "$3" "$r"
}

# Kamailio, each NCHILD in turn; a later NCHILD starts just above the best so far and
# does not step down, since it only matters if it beats it. With the first NCHILD,
# holdfast's series for a transport runs right after Kamailio's (the idle server stays
# up meanwhile; it costs next to nothing), then each server's fixed-rate CPU step.
# Later NCHILD values get their CPU step at the same rate.
if has_server kamailio; then
    first_n=1
    for n in $NCHILD; do
        kam_start "$n"
        for t in $TRANSPORTS; do
            prev="${MAXRATE[kamailio,$t]}"
            first="$START"
            if [ "$prev" -gt 0 ]; then first=$(((prev / STEP + 1) * STEP)); fi
            bench_log "kamailio NCHILD=$n -t $t: stepping from $first/s"
            series kamailio "n$n" "$t" "$first" "$first_n"
            b="$SERIES_BEST"
            if [ "$b" -gt "$prev" ]; then MAXRATE[kamailio,$t]="$b"; KAMN[$t]="$n"; fi
            if [ "$first_n" = 1 ]; then
                if has_server holdfast; then hf_series "$t"; fi
                cpu_rate "$t"
            fi
            # Kamailio's first: holdfast's UDP transactions expire meanwhile
            cpu_step kamailio "n$n" "$t"
            if [ "$first_n" = 1 ] && has_server holdfast; then cpu_step holdfast "$HF_CONFIG_TAG" "$t"; fi
        done
        first_n=0
        kam_stop
    done
elif has_server holdfast; then
    for t in $TRANSPORTS; do
        hf_series "$t"
        cpu_rate "$t"
        cpu_step holdfast "$HF_CONFIG_TAG" "$t"
    done
fi
hf_stop_metrics="$(curl -s --max-time 2 "$HF_METRICS" | grep -v '^#' | awk '$2 != 0' || true)"
load_end="$(bench_load)"

# ---------------------------------------------------------------- the table
# CPU per transaction at the transport's fixed rate (cpu_at): the lowest of the steps that
# passed at that rate (for Kamailio over every NCHILD tried); "*" = none passed (lowest shown).
COL_KIND=0 COL_RATE=4 COL_US=14 COL_PASS=23
# fail_note SERVER TRANSPORT: what the first failing step of a series showed.
fail_note() {
    awk -F'\t' -v s="$1" -v t="$2" '$1 == s && $3 == t && $23 == 0 {
        printf "first failing step %d/s (%s): %.3f %% ok, achieved %d/s, %d retransmissions, server UDP socket drops %d, host UDP rcvbuf errors %d", $4, $2, $10, $11, $12, $18, $17
        if (s == "holdfast") printf ", holdfast_overloaded_total +%d, holdfast_limit_hits_total +%d (write_queue +%d)", $19, $20, $21
        printf ", sipp failures %s, others on the host %.1f cores\n", $25, $24
        exit }' "$steps_tsv"
}
# sipp's CPU at a series' highest passing step: near 100 % the race measures sipp.
sipp_at() {
    awk -F'\t' -v s="$1" -v t="$2" -v r="$3" '$1 == s && $3 == t && $4 == r && $23 == 1 { p = $15 } END { print (p == "" ? "-" : p) }' "$steps_tsv"
}

table="$OUT/table.md"
{
    echo "OPTIONS, sipp stepping $START/s + $STEP/s (${HOLD} s per step, >= 99.9 % successful and >= 95 % of the offered rate achieved); CPU per transaction at one fixed rate per transport"
    echo "$started_at; $ncpu cores; $(uname -r); at start: $load_start; at end: $load_end"
    echo
    echo "| transport | holdfast max/s | Kamailio max/s | ratio hf/kam | CPU measured at | holdfast CPU µs/txn | Kamailio CPU µs/txn | ratio hf/kam |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    bench_table_rows
    echo
    for t in $TRANSPORTS; do
        echo "- -t $t: Kamailio's best NCHILD ${KAMN[$t]}; sipp CPU at the best step: holdfast $(sipp_at holdfast "$t" "${MAXRATE[holdfast,$t]}") %, Kamailio $(sipp_at kamailio "$t" "${MAXRATE[kamailio,$t]}") % (near 100 % sipp is the limit, not the server)"
    done
    bench_table_failures
    echo "- '*' = no step at the fixed rate passed for that server (its lowest figure is shown)."
    if has_server holdfast; then
        echo "- holdfast over UDP keeps each answered transaction 64*T1 = $((64 * ${HF_T1_MS:-500} / 1000)) s in a table of $HF_TX_TABLE (then 503, holdfast_overloaded_total): its sustained UDP ceiling is $((HF_TX_TABLE * 1000 / (64 * ${HF_T1_MS:-500})))/s; a $HOLD s step on an empty table can pass up to about $((HF_TX_TABLE / HOLD))/s."
    fi
    echo "- holdfast config: $HF_CONFIG_TAG (write_queue ${HF_WRITE_QUEUE:-default 512}, t1_ms ${HF_T1_MS:-default 500})."
    echo "- Steps: $steps_tsv"
} >"$table"
echo
cat "$table"
echo
echo "holdfast counters at the end (non-zero):"
sed 's/^/  /' <<<"$hf_stop_metrics"
