# shellcheck shell=bash
# Helpers for the load benches under bench/ (sourced, not run). Linux only: they read
# /proc. Nothing here starts a process that it does not also hand back by PID.

bench_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 2; }

# bench_need CMD...: fail early when a tool is missing.
bench_need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || bench_die "'$c' not found (install it first)"
    done
}

# bench_port_busy PORT: true when anything listens or is bound on PORT (UDP or TCP).
bench_port_busy() {
    [ -n "$(ss -Hlntu "sport = :$1" 2>/dev/null)" ]
}

# bench_free_port: a port that nothing uses over UDP or TCP right now.
bench_free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if ! bench_port_busy "$p"; then
            echo "$p"
            return 0
        fi
    done
    bench_die "no free port found"
}

# bench_tree PID: PID and all its descendants, one a line.
bench_tree() {
    local all
    # one pass over /proc: "pid ppid" pairs, then a walk from PID
    # a process may end between the glob and the read: cat then fails, which must not
    # end this function (errexit, pipefail) with an empty list
    all="$(cat /proc/[0-9]*/stat 2>/dev/null || true)"
    all="$(awk 'NF { pid = $1; s = $0; sub(/.*\) /, "", s); split(s, a, " "); print pid, a[2] }' <<<"$all")"
    awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            n = 1; q[1] = root; print root
            for (i = 1; i <= n; i++) {
                m = split(kids[q[i]], k, " ")
                for (j = 1; j <= m; j++) { q[++n] = k[j]; print k[j] }
            }
        }' <<<"$all"
}

# bench_cpu_ticks PID...: utime+stime (clock ticks) summed over the given processes.
# /proc/PID/stat counts every thread of the process.
bench_cpu_ticks() {
    local p sum=0 t
    for p in "$@"; do
        t="$(awk '{ s = $0; sub(/.*\) /, "", s); split(s, a, " "); print a[12] + a[13] }' "/proc/$p/stat" 2>/dev/null || true)"
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

# bench_idle_ticks: idle+iowait ticks of all processors (/proc/stat "cpu" line).
bench_idle_ticks() {
    awk '$1 == "cpu" { print $5 + $6; exit }' /proc/stat
}

# bench_udp_rcvbuf_errors: the host's UDP receive-buffer drops (all sockets).
bench_udp_rcvbuf_errors() {
    awk '/^Udp:/ { if (hdr) { print $6; exit } hdr = 1 }' /proc/net/snmp
}

# bench_udp_sock_drops PORT: drops counted on the UDP socket(s) bound to 127.0.0.1:PORT.
bench_udp_sock_drops() {
    local hex
    hex="$(printf '0100007F:%04X' "$1")"
    awk -v a="$hex" '$2 == a { d += $NF } END { print d + 0 }' /proc/net/udp
}

# bench_metric URL NAME: the sum of every series of one Prometheus family.
bench_metric() {
    curl -s --max-time 2 "$1" 2>/dev/null |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }'
}

# bench_metric_series URL 'NAME{labels}': one series.
bench_metric_series() {
    curl -s --max-time 2 "$1" 2>/dev/null | awk -v n="$2" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }'
}

# bench_children_cpu_cs SCRATCH_FILE: sets BENCH_CHILD_CS to the user+sys time (1/100 s)
# of this shell's reaped children, from the `times` builtin (second line). The
# difference around a `wait` is the CPU of what was waited for, its own reaped children
# included. Call it directly, never in $(...) or a pipeline: a subshell starts from zero.
bench_children_cpu_cs() {
    times >"$1"
    BENCH_CHILD_CS="$(awk 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, m, "m"); sub(/s$/, "", m[2]); t += m[1] * 60 + m[2] }
        printf "%d\n", t * 100 + 0.5 }' "$1")"
}

# bench_stop PID [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace period.
bench_stop() {
    local pid="$1" grace="${2:-5}" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 $((grace * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# bench_load: "load average" part of uptime.
bench_load() { uptime | sed 's/.*load average: */load /'; }

# ---------------------------------------------------------------- sipp results
# (added for bench/register-bench.sh; options-bench.sh keeps its own copies)

# bench_sipp_stats STATFILE CALLS: "created successful failed retransmissions achieved"
# from sipp's -trace_stat file: the last row holds the totals; the achieved rate is the
# cumulative CallRate(C) of the last row written while calls were still being made.
bench_sipp_stats() {
    if [ ! -s "$1" ]; then echo "0 0 0 0 0"; return; fi
    awk -F';' -v m="$2" 'NR > 1 && NF > 60 {
            created = $12; succ = $16; failed = $18; retr = $58; rate = $8
            if (created < m) { running = rate }
        }
        END { if (running == "") running = rate
              printf "%d %d %d %d %.0f\n", created, succ, failed, retr, running }' "$1"
}

# bench_sipp_fail_reasons STATFILE: why calls failed, from sipp's own counters (last row),
# e.g. "unexpected_msg=12,recv_timeout=3"; "-" when none.
bench_sipp_fail_reasons() {
    if [ ! -s "$1" ]; then echo "-"; return; fi
    awk -F';' 'NR > 1 && NF > 60 { r = $0 } END {
            n = split(r, f, ";")
            split("22:udp_max_retrans 24:tcp_connect 26:tcp_closed 28:unexpected_msg 42:recv_timeout 20:cannot_send", k, " ")
            out = ""
            for (i = 1; i <= 6; i++) { split(k[i], kv, ":"); if (f[kv[1]] + 0 > 0) out = out (out == "" ? "" : ",") kv[2] "=" f[kv[1]] }
            print (out == "" ? "-" : out) }' "$1"
}

# bench_sipp_unexpected ERRFILE: the status codes of the unexpected responses in sipp's
# -trace_err file, most frequent first, e.g. "401x120,503x7"; "-" when none. Counts
# are a lower bound when the file reached sipp's -max_log_size.
bench_sipp_unexpected() {
    local out
    out="$(cat "$1"* 2>/dev/null | grep -ao "received 'SIP/2.0 [0-9][0-9][0-9]" |
        awk '{ c[$3]++ } END { for (k in c) print c[k], k }' | sort -rn |
        awk '{ printf "%s%sx%d", (NR > 1 ? "," : ""), $2, $1 }')"
    echo "${out:--}"
}

# bench_users_csv FILE N PREFIX PWPREFIX: a sipp injection file (SEQUENTIAL) of N users
# PREFIX1;PWPREFIX1 ... PREFIXN;PWPREFIXN.
bench_users_csv() {
    awk -v n="$2" -v u="$3" -v p="$4" 'BEGIN { print "SEQUENTIAL"; for (i = 1; i <= n; i++) print u i ";" p i }' >"$1"
}

# bench_fs_of DIR: "fstype on device" of the filesystem holding DIR.
bench_fs_of() {
    df -PT "$1" 2>/dev/null | awk 'NR == 2 { print $2 " on " $1 }'
}

# bench_fsync_ms DIR: mean milliseconds of a 4 kB synchronous write (O_DSYNC, i.e. one
# fdatasync each) in DIR, over 100 writes: how dear a durable commit is on that disk.
bench_fsync_ms() {
    local f="$1/.fsync-probe.$$" out
    out="$(LC_ALL=C dd if=/dev/zero of="$f" bs=4k count=100 oflag=dsync 2>&1 || true)"
    rm -f "$f"
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s," || $i ~ /^s,?$/) { printf "%.2f\n", $(i - 1) * 1000 / 100; exit } }' <<<"$out"
}

# bench_settle MAX_SECONDS PID...: wait until the processes use less than 10 % of one
# processor over half a second (a backlog worked off, retransmissions over), at most
# MAX_SECONDS; prints the seconds waited.
bench_settle() {
    local max="$1" tck c0 c1 i
    shift
    tck="$(getconf CLK_TCK)"
    c0="$(bench_cpu_ticks "$@")"
    for i in $(seq 1 $((max * 2))); do
        sleep 0.5
        c1="$(bench_cpu_ticks "$@")"
        if [ $(((c1 - c0) * 20)) -lt "$tck" ]; then echo $(((i + 1) / 2)); return 0; fi
        c0="$c1"
    done
    echo "$max"
}

# The options every bench script takes: sets quick, build and kb_dir (the Kamailio
# bench files). --help prints the calling script's header comment.
bench_parse_args() {
    quick=0
    build=1
    kb_dir="${KAMAILIO_BENCH_DIR:-$root/../shared/interop/kamailio-bench}"
    while [ $# -gt 0 ]; do
        case "$1" in
        --quick) quick=1 ;;
        --no-build) build=0 ;;
        --kamailio-bench) kb_dir="${2:?--kamailio-bench needs a directory}"; shift ;;
        --kamailio-bench=*) kb_dir="${1#*=}" ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) bench_die "unknown argument '$1' (see --help)" ;;
        esac
        shift
    done
}
