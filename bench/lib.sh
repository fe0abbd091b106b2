# shellcheck shell=bash disable=SC2034 # the variables set here are read by the scripts
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
# (options-bench.sh keeps its own list of failure reasons: its order differs)

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

# ================================================================ shared by the race scripts
# (options-bench.sh, register-bench.sh, call-bench.sh). They read the scripts' globals:
# work, OUT, steps_tsv, SERVERS, SIPP, KAMAILIO, KAM_CFG, KAM_PORT, HF_*, clk_tck, ncpu,
# START, MAX, REFINE, RETRY, FACTOR, HOLD, CPU_RATE, TRANSPORTS, NCHILD, ROUNDS, SETTLE_MAX and
# the associative arrays below.
declare -A MAXRATE KAMN CPURATE PROBE_NOTE

# bench_kb_dir: resolve kb_dir (from bench_parse_args) to an absolute path, or die.
bench_kb_dir() {
    kb_dir="$(cd "$kb_dir" 2>/dev/null && pwd)" || bench_die "no Kamailio bench directory (give --kamailio-bench DIR or KAMAILIO_BENCH_DIR)"
}

# has_server NAME: true when NAME is in SERVERS.
has_server() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# bench_need_kam_sqlite: Kamailio, sqlite3 and db_sqlite's schema files (sets KAM_SQL_DIR).
bench_need_kam_sqlite() {
    local f
    bench_need "$KAMAILIO" sqlite3
    KAM_SQL_DIR=/usr/share/kamailio/db_sqlite
    for f in standard-create.sql auth_db-create.sql; do
        [ -r "$KAM_SQL_DIR/$f" ] || bench_die "missing $KAM_SQL_DIR/$f (install kamailio-sqlite-modules)"
    done
}

# bench_workdir NAME: the scratch directory (work) and the run's facts: steps_tsv, ncpu,
# clk_tck, started_at, t_start, load_start; creates OUT.
bench_workdir() {
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
    mkdir -p "$OUT"
    rm -rf "$OUT/sipp-errors"
    steps_tsv="$OUT/steps.tsv"
    ncpu="$(nproc)"
    clk_tck="$(getconf CLK_TCK)"
    started_at="$(date '+%Y-%m-%d %H:%M %Z')"
    t_start="$(date +%s)"
    load_start="$(bench_load)"
}

# bench_traps VAR...: on exit stop the processes whose PIDs the named variables hold (in
# that order, 2 s grace each), then Kamailio and holdfast, keep the logs in OUT and
# remove work. Every server runs under an outer timeout (SERVER_TIMEOUT) long enough
# for the whole run.
BENCH_CLIENT_VARS=""
HF_TPID="" HF_PID="" KAM_TPID="" KAM_PID=""
SERVER_TIMEOUT=3600
bench_cleanup() {
    local rc=$? v d
    trap - EXIT INT TERM
    for v in $BENCH_CLIENT_VARS; do bench_stop "${!v:-}" 2; done
    bench_stop "$KAM_PID" 10
    bench_stop "$KAM_TPID" 2
    bench_stop "$HF_PID" 10
    bench_stop "$HF_TPID" 2
    wait 2>/dev/null || true
    cp -f "$work"/*.log "$OUT"/ 2>/dev/null || true
    for d in "$work"/kam-*; do
        [ -f "$d/kamailio.log" ] && cp -f "$d/kamailio.log" "$OUT/kamailio-n${d##*kam-}.log"
    done
    rm -rf "$work"
    exit "$rc"
}
bench_traps() {
    local v
    BENCH_CLIENT_VARS="$*"
    for v in "$@"; do printf -v "$v" '%s' ""; done
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

# bench_hf_label: HOLDFAST_BIN (no build then) and HF_LABEL, its name in the table.
bench_hf_label() {
    HF_LABEL_DEFAULT=tree
    if [ -n "${HOLDFAST_BIN:-}" ]; then
        build=0
        HF_LABEL_DEFAULT="$HOLDFAST_BIN"
    fi
    HF_LABEL="${HF_LABEL:-$HF_LABEL_DEFAULT}"
}

# bench_hf_bin: build holdfast unless build=0; sets HF_BIN.
bench_hf_bin() {
    if [ "$build" = 1 ]; then
        bench_log "building holdfast (cargo build --release -p holdfast)"
        (cd "$root" && cargo build --release -p holdfast) >"$work/build.log" 2>&1 ||
            { tail -20 "$work/build.log" >&2; bench_die "cargo build failed"; }
    fi
    HF_BIN="${HOLDFAST_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/holdfast}"
    [ -x "$HF_BIN" ] || bench_die "no holdfast binary at $HF_BIN"
}

# bench_hf_registrar_config HEADER TX_COMMENT: holdfast.toml for a registrar bench (admin
# API with a token, max_transactions HF_MAX_TX, nonce lifetime HF_NONCE_LIFETIME), then
# check-config. Sets admin_port, HF_ADMIN, HF_METRICS.
bench_hf_registrar_config() {
    admin_port="$(bench_free_port)"
    HF_ADMIN="http://127.0.0.1:$admin_port"
    HF_METRICS="$HF_ADMIN/metrics"
    cat >"$work/holdfast.toml" <<EOF
$1
[sip]
listen = ["udp:127.0.0.1:$HF_PORT", "tcp:127.0.0.1:$HF_PORT"]
core_shards = ${HF_CORE_SHARDS:-0}

[limits]
messages_per_sec_per_ip = 1000000
message_burst_per_ip = 1000000
$2
max_transactions = $HF_MAX_TX

[registrar]
min_expires = 10
nonce_lifetime_secs = $HF_NONCE_LIFETIME
${HF_DIGEST_ALGORITHMS:+digest_algorithms = $HF_DIGEST_ALGORITHMS}

[bans]
enabled = false

[admin]
listen = "127.0.0.1:$admin_port"
token = "$HF_TOKEN"

[log]
level = "warn"
EOF
    "$HF_BIN" check-config "$work/holdfast.toml" >/dev/null || bench_die "holdfast rejects the bench config"
}

# bench_hf_start DESCRIPTION [RUN_ARG...]: holdfast with work/holdfast.toml; returns once
# its metrics answer. Sets HF_TPID and HF_PID.
bench_hf_start() {
    local desc="$1" i
    shift
    timeout -k 5 "$SERVER_TIMEOUT" "$HF_BIN" run --config "$work/holdfast.toml" "$@" \
        >>"$work/holdfast.log" 2>&1 &
    HF_TPID=$!
    for i in $(seq 1 100); do
        if curl -s --max-time 1 "$HF_METRICS" >/dev/null 2>&1; then break; fi
        kill -0 "$HF_TPID" 2>/dev/null || { cat "$work/holdfast.log" >&2; bench_die "holdfast exited"; }
        sleep 0.1
    done
    HF_PID="$(bench_tree "$HF_TPID" | sed -n 2p)"
    [ -n "$HF_PID" ] || bench_die "holdfast did not start"
    bench_log "holdfast pid $HF_PID on 127.0.0.1:$HF_PORT udp+tcp, $desc"
}

# bench_hf_restart: stops holdfast and starts it again (hf_start) on the same data:
# before the CPU steps, as Kamailio is restarted for them, so that no state left by the
# max-rate series (calls of a failed step still ringing until Timer C, 181 s, their
# transactions) is worked off inside a CPU step or its tail.
bench_hf_restart() {
    bench_stop "$HF_TPID" 10
    wait "$HF_TPID" 2>/dev/null || true
    hf_start
}

# bench_hf_start_data: holdfast with its data in HF_DATA (a registrar bench).
bench_hf_start_data() {
    bench_hf_start "admin $HF_ADMIN, data $HF_DATA ($(bench_fs_of "$work"))" --data-dir "$HF_DATA"
}

# bench_hf_add_users THREADS [CALLEE...]: the domain DOMAIN, users u1..uUSERS (password
# PW_PREFIX<i>) and each CALLEE (password PW_PREFIX<CALLEE>) through the admin API, THREADS
# requests in flight (the writes share group commits). Without python3 and without
# callees, curl and xargs do it.
bench_hf_add_users() {
    local threads="$1" t0 n
    shift
    t0="$(date +%s)"
    if command -v python3 >/dev/null 2>&1 || [ $# -gt 0 ]; then
        bench_need python3
        cat >"$work/add_users.py" <<'EOF'
import http.client, json, sys, threading
port, token, domain, n, pw, T = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
callees = sys.argv[7:]
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
def post(c, path, body):
    c.request("POST", path, json.dumps(body), H)
    r = c.getresponse(); r.read()
    return r.status
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
s = post(c, "/api/v1/domains", {"name": domain})
if s not in (201, 409):
    sys.exit("adding the domain: HTTP %d" % s)
users = [("u%d" % i, pw + str(i)) for i in range(1, n + 1)] + [(u, pw + u) for u in callees]
bad = []
def work(k, step):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for user, password in users[k::step]:
        s = post(c, "/api/v1/users", {"aor": "%s@%s" % (user, domain), "password": password})
        if s not in (201, 409):
            bad.append((user, s))
ts = [threading.Thread(target=work, args=(k, T)) for k in range(T)]
for t in ts: t.start()
for t in ts: t.join()
if bad:
    sys.exit("%d users not added, e.g. %r" % (len(bad), bad[:3]))
EOF
        python3 "$work/add_users.py" "$admin_port" "$HF_TOKEN" "$DOMAIN" "$USERS" "$PW_PREFIX" "$threads" "$@" \
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

# bench_kam_make_db CHECK [EXTRA_SQL]: Kamailio's SQLite database KAM_DB with users
# u1..uUSERS (and whatever EXTRA_SQL inserts); with CHECK=1 it must hold exactly USERS.
KAM_DB=""
bench_kam_make_db() {
    local n
    {
        cat "$KAM_SQL_DIR/standard-create.sql" "$KAM_SQL_DIR/auth_db-create.sql"
        echo "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)"
        echo "INSERT INTO subscriber (username, domain, password) SELECT 'u' || i, '$DOMAIN', '$PW_PREFIX' || i FROM n;"
        [ -z "${2:-}" ] || printf '%s\n' "$2"
    } | sqlite3 "$KAM_DB" || bench_die "creating Kamailio's SQLite database failed"
    n="$(sqlite3 "$KAM_DB" 'SELECT count(*) FROM subscriber')"
    [ "$1" != 1 ] || [ "$n" = "$USERS" ] || bench_die "Kamailio's subscriber table has $n rows, not $USERS"
    bench_log "kamailio: $n users in SQLite $KAM_DB (subscriber, index on username)"
}

# bench_kam_start NCHILD LOG_SUFFIX [CFG_ARG...]: Kamailio with KAM_CFG, NCHILD children, in
# work/kam-NCHILD (made by the caller); returns once it listens. Sets KAM_TPID and KAM_PID.
bench_kam_start() {
    local n="$1" suffix="$2" d="$work/kam-$1" i
    shift 2
    local args=(-f "$KAM_CFG" -Y "$d" "$@" -A "CTLSOCK=\"unix:$d/ctl\"" -A "NCHILD=$n")
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
    bench_log "kamailio NCHILD=$n pid $KAM_PID ($(bench_tree "$KAM_PID" | wc -l) processes) on 127.0.0.1:$KAM_PORT$suffix"
}

# bench_kam_start_sqlite NCHILD: Kamailio with its credentials in KAM_DB (SQLite).
bench_kam_start_sqlite() {
    mkdir -p "$work/kam-$1"
    # four slashes: an absolute path (three would be relative, and silently empty)
    bench_kam_start "$1" ", credentials in SQLite" -A WITH_SQLITE -A "DBURL=\"sqlite:///$KAM_DB\""
}

kam_stop() {
    bench_stop "$KAM_PID" 10
    bench_stop "$KAM_TPID" 2
    wait "$KAM_TPID" 2>/dev/null || true
    KAM_PID="" KAM_TPID=""
    bench_wait_port_free "$KAM_PORT"
}

# bench_wait_port_free PORT: up to 5 s for PORT to be free (a TCP TIME_WAIT does not count).
bench_wait_port_free() {
    local i
    for i in $(seq 1 50); do bench_port_busy "$1" || return 0; sleep 0.1; done
}

# ---------------------------------------------------------------- one step
# bench_sipp_run SECS SIPP_ARG...: one sipp in work, bounded by timeout(1) at SECS*2+10 s.
# Sets SIPP_RC and SIPP_CPU_CS (sipp's user+sys in 1/100 s); SIPP_TPID while it runs.
bench_sipp_run() {
    local secs="$1" cs0
    shift
    bench_children_cpu_cs "$work/times"
    cs0="$BENCH_CHILD_CS"
    (cd "$work" && exec timeout -k 2 $((secs * 2 + 10)) "$SIPP" "$@") >/dev/null 2>>"$work/sipp.log" &
    SIPP_TPID=$!
    SIPP_RC=0
    wait "$SIPP_TPID" || SIPP_RC=$?
    SIPP_TPID=""
    bench_children_cpu_cs "$work/times"
    SIPP_CPU_CS=$((BENCH_CHILD_CS - cs0))
}

# bench_step_server SERVER: STEP_PORT and STEP_PID_LIST (the server's processes, an array).
bench_step_server() {
    local rootpid
    if [ "$1" = holdfast ]; then STEP_PORT="$HF_PORT" rootpid="$HF_PID"; else STEP_PORT="$KAM_PORT" rootpid="$KAM_PID"; fi
    mapfile -t STEP_PID_LIST < <(bench_tree "$rootpid")
    [ "${#STEP_PID_LIST[@]}" -gt 0 ] || STEP_PID_LIST=("$rootpid")
}

# bench_measure_begin / bench_measure_end: the host's UDP drops, the server socket's
# drops, the server's CPU, the host's idle time and the wall clock around a step. End
# sets M_RCV, M_DR, M_CPU, M_IDLE (ticks), M_WALL (ns), M_WALL_TICKS and M_C1 (the
# server's CPU ticks at the end).
bench_measure_begin() {
    M_RCV0="$(bench_udp_rcvbuf_errors)"
    M_DR0="$(bench_udp_sock_drops "$STEP_PORT")"
    M_C0="$(bench_cpu_ticks "${STEP_PID_LIST[@]}")"
    M_IDLE0="$(bench_idle_ticks)"
    M_T0="$(date +%s%N)"
}
bench_measure_end() {
    local t1 idle1 c1 dr1 rcv1
    t1="$(date +%s%N)"
    idle1="$(bench_idle_ticks)"
    c1="$(bench_cpu_ticks "${STEP_PID_LIST[@]}")"
    dr1="$(bench_udp_sock_drops "$STEP_PORT")"
    rcv1="$(bench_udp_rcvbuf_errors)"
    M_WALL=$((t1 - M_T0)) M_IDLE=$((idle1 - M_IDLE0)) M_CPU=$((c1 - M_C0)) M_C1="$c1"
    M_DR=$((dr1 - M_DR0)) M_RCV=$((rcv1 - M_RCV0))
    M_WALL_TICKS=$((M_WALL * clk_tck / 1000000000))
}

# bench_settle_failed SERVER: after a failed step (STEP_PASS != 1) the server works off
# retransmissions and its backlog: wait for its CPU to fall under 10 % of a processor,
# at most SETTLE_MAX seconds.
bench_settle_failed() {
    local waited
    [ "$STEP_PASS" != 1 ] || return 0
    waited="$(bench_settle "$SETTLE_MAX" "${STEP_PID_LIST[@]}")"
    if [ "$waited" -gt 2 ]; then bench_log "$1 took ${waited} s to settle"; fi
}

# bench_after_step SERVER CONFIG KIND: after a failed step of a series (KIND step) the
# server is restarted (Kamailio with the same NCHILD, holdfast on the same data) when
# RESTART_FAILED=1, the default, so that the next step does not start inside the storm
# the failed one left: calls of a failed step still ringing until their INVITE timeout
# (Kamailio's fr_inv_timer 30 s, holdfast's Timer C 181 s), whose INVITEs go on being
# retransmitted to the next step's callee and whose transactions fill the table. With
# RESTART_FAILED=0, or after a probe or a CPU step, bench_settle_failed.
bench_after_step() {
    if [ "$STEP_PASS" != 1 ] && [ "$3" = step ] && [ "${RESTART_FAILED:-1}" = 1 ]; then
        bench_log "$1: restarted after its failed step"
        if [ "$1" = holdfast ]; then
            bench_hf_restart
        else
            kam_stop
            kam_start "${2#n}"
        fi
        return 0
    fi
    bench_settle_failed "$1"
}

# ---------------------------------------------------------------- series (rate * FACTOR)
# Used by register-bench.sh and call-bench.sh, whose run_step SERVER CONFIG TRANSPORT
# RATE [KIND] sets STEP_PASS, STEP_ROW (probe rows: $11 success %, $27 sipp's failures,
# $28 unexpected codes), STEP_SEQ, STEP_END_TICKS, STEP_END_S and STEP_PIDS. Rates are
# multiples of BENCH_UNIT.

# try_rate SERVER CONFIG TRANSPORT RATE: one step, repeated once on failure with RETRY=1.
try_rate() {
    run_step "$@"
    if [ "$STEP_PASS" != 1 ] && [ "$RETRY" = 1 ]; then
        run_step "$@"
    fi
    [ "$STEP_PASS" = 1 ]
}

# next_rate RATE: RATE * FACTOR rounded to BENCH_UNIT (at least RATE + BENCH_UNIT).
next_rate() {
    awk -v r="$1" -v f="$FACTOR" -v u="$BENCH_UNIT" 'BEGIN { n = int(r * f / u + 0.5) * u; if (n < r + u) n = r + u; print n }'
}

# above_rate RATE: the first rate worth trying to beat RATE: RATE * 1.1 rounded up to
# BENCH_UNIT (at least RATE + BENCH_UNIT).
above_rate() {
    awk -v r="$1" -v u="$BENCH_UNIT" 'BEGIN { n = int((r * 1.1 + u - 1) / u) * u; if (n < r + u) n = r + u; print n }'
}

# series SERVER CONFIG TRANSPORT FIRST_RATE [DOWN]: a probe (2 s at BENCH_UNIT/s, also
# the warm-up: a server that fails it is not stepped), then step up from FIRST_RATE until
# a step fails (after RETRY); with DOWN=1 (the default) and a failing first step, halve
# the rate until one passes (down to BENCH_UNIT/s); then REFINE bisection steps between
# the best pass and the lowest fail. Sets SERIES_BEST (0: nothing passed).
# (Not run in $(...): the EXIT trap must see the sipps it starts.)
series() {
    local server="$1" config="$2" t="$3" rate="$4" down="${5:-1}" best=0 fail=0 i mid u="$BENCH_UNIT"
    run_step "$server" "$config" "$t" "$u" probe
    if [ "$STEP_PASS" != 1 ]; then
        PROBE_NOTE[$server,$t]="$(awk -F'\t' -v u="$u" '{ printf "fails even at %d/s (%.1f %% ok; unexpected responses %s; sipp: %s)", u, $11, $28, $27 }' <<<"$STEP_ROW")"
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
        rate=$((fail / 2 / u * u))
        while [ "$rate" -ge "$u" ]; do
            if try_rate "$server" "$config" "$t" "$rate"; then best="$rate"; break; fi
            fail="$rate"
            rate=$((rate / 2 / u * u))
        done
    fi
    for i in $(seq 1 "$REFINE"); do
        [ "$best" -gt 0 ] && [ "$fail" -gt 0 ] || break
        mid=$(((best + fail) / 2 / u * u))
        [ "$mid" -gt "$best" ] || break
        run_step "$server" "$config" "$t" "$mid"
        if [ "$STEP_PASS" = 1 ]; then best="$mid"; else fail="$mid"; fi
    done
    SERIES_BEST="$best"
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

# The fixed-rate CPU step. Over UDP holdfast frees each transaction 64*T1 = 32 s after it
# ends (Timer J), so part of the work is done after the step: for a UDP CPU step (with
# TAIL=1) the server's CPU is read again TAIL_S seconds after the step ended and that tail
# is added (column 29, tail_cpu_s; column 15, CPU µs per success, then includes it).
# Both servers get the same treatment; the waits overlap.
TAIL_S=34
declare -A TAIL_ID TAIL_TICKS TAIL_END TAIL_PIDS
# cpu_step SERVER CONFIG TRANSPORT: one step at CPURATE[TRANSPORT] (unless the server
# failed its probe); for UDP, arms the tail reading.
cpu_step() {
    local r="${CPURATE[$3]}"
    [ -z "${PROBE_NOTE[$1,$3]:-}" ] || return 0
    bench_log "$1 -t $3: CPU at $r/s"
    run_step "$1" "$2" "$3" "$r" cpu
    if [ "$3" = u1 ] && [ "${TAIL:-1}" = 1 ]; then
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

# kam_series_round ROUND: Kamailio's series of one round, every transport. Round 1
# tries each NCHILD in turn; a later NCHILD starts about 10 % above the best so far
# and does not step down, since it only matters if it beats it. Later rounds step
# only the NCHILD that was best in round 1 for that transport, from START.
kam_series_round() {
    local round="$1" first_n=1 n t prev first b
    for n in $NCHILD; do
        for t in $TRANSPORTS; do
            if [ "$round" -gt 1 ]; then
                [ "$n" = "${KAMN1[$t]:-${NCHILD%% *}}" ] || continue
                first_n=1
            fi
            kam_start "$n"
            prev="${ROUNDMAX[kamailio,$t,$round]:-0}"
            first="$START"
            if [ "$prev" -gt 0 ]; then first="$(above_rate "$prev")"; fi
            bench_log "round $round: kamailio NCHILD=$n -t $t: stepping from $first/s"
            series kamailio "n$n" "$t" "$first" "$first_n"
            b="$SERIES_BEST"
            if [ "$b" -gt "$prev" ]; then
                ROUNDMAX[kamailio,$t,$round]="$b"
                [ "$round" -gt 1 ] || KAMN1[$t]="$n"
            fi
            if [ "$b" -gt "${MAXRATE[kamailio,$t]}" ]; then MAXRATE[kamailio,$t]="$b"; KAMN[$t]="$n"; fi
            kam_stop
        done
        first_n=0
    done
}

# hf_series_round ROUND: holdfast's series of one round, every transport, each on a
# freshly started holdfast (the first series of the run on the one started for the
# users).
HF_SERIES_RUN=0
hf_series_round() {
    local round="$1" t
    for t in $TRANSPORTS; do
        [ "$HF_SERIES_RUN" = 0 ] || bench_hf_restart
        HF_SERIES_RUN=1
        bench_log "round $round: holdfast ($HF_LABEL) -t $t: stepping from $START/s"
        series holdfast hf "$t" "$START"
        ROUNDMAX[holdfast,$t,$round]="$SERIES_BEST"
        if [ "$SERIES_BEST" -gt "${MAXRATE[holdfast,$t]}" ]; then MAXRATE[holdfast,$t]="$SERIES_BEST"; fi
    done
}

# bench_race: the run of register-bench.sh and call-bench.sh (kam_start NCHILD is theirs).
# 1. ROUNDS rounds of series. In each, Kamailio (kam_series_round) and holdfast
#    (hf_series_round), every transport; odd rounds Kamailio first, even rounds
#    holdfast first, so that a host that gets faster or slower during the run (the
#    machines here move by 20 % within minutes) favours neither. Each server's
#    maximum is its best over the rounds; the table also gives each round's pair.
#    Every series runs on a freshly started server (Kamailio with that NCHILD, holdfast
#    on the same data), so that none is charged with what the one before left behind
#    (holdfast keeps each answered UDP transaction 32 s; failed steps leave calls and
#    retransmissions in flight).
# 2. For each transport, Kamailio restarted with its best NCHILD for that transport
#    and holdfast restarted (once, on the same data), one CPU step each at the same
#    fixed rate.
declare -A ROUNDMAX KAMN1
bench_race() {
    local n t round kam_running
    for t in $TRANSPORTS; do KAMN[$t]="-"; MAXRATE[kamailio,$t]=0; MAXRATE[holdfast,$t]=0; done
    for round in $(seq 1 "$ROUNDS"); do
        if [ $((round % 2)) = 1 ]; then
            if has_server kamailio; then kam_series_round "$round"; fi
            if has_server holdfast; then hf_series_round "$round"; fi
        else
            if has_server holdfast; then hf_series_round "$round"; fi
            if has_server kamailio; then kam_series_round "$round"; fi
        fi
    done
    kam_running=""
    if has_server holdfast; then bench_hf_restart; fi
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
        if has_server holdfast; then cpu_step holdfast hf "$t"; fi
        cpu_tail kamailio
        cpu_tail holdfast
    done
    [ -z "$kam_running" ] || kam_stop
}

# bench_table_rounds: with more than one round, one line per transport with each
# round's maxima and their ratio.
bench_table_rounds() {
    local t round h k line
    [ "$ROUNDS" -gt 1 ] || return 0
    for t in $TRANSPORTS; do
        line=""
        for round in $(seq 1 "$ROUNDS"); do
            h="${ROUNDMAX[holdfast,$t,$round]:-0}" k="${ROUNDMAX[kamailio,$t,$round]:-0}"
            line="$line${line:+; }round $round ($([ $((round % 2)) = 1 ] && echo "Kamailio first" || echo "holdfast first")): holdfast $h, Kamailio $k ($(ratio "$h" "$k"))"
        done
        echo "- -t $t per round: $line"
    done
}

# ---------------------------------------------------------------- the table
# Column numbers of steps.tsv: COL_RATE, COL_US (CPU µs per success), COL_PASS and
# COL_KIND (0: no kind column, every row counts as a CPU step).

# cpu_at SERVER TRANSPORT: CPU per success at the transport's fixed rate: the lowest of
# the CPU steps that passed at that rate (for Kamailio over every NCHILD tried); "*" =
# none passed (lowest shown).
cpu_at() {
    awk -F'\t' -v s="$1" -v t="$2" -v r="${CPURATE[$2]}" -v p="$COL_PASS" -v rc="$COL_RATE" -v uc="$COL_US" -v kc="$COL_KIND" '
        $1 == s && $3 == t && (kc == 0 || $kc == "cpu") && $rc == r {
            if ($p == 1 && (ok == "" || $uc < ok)) ok = $uc
            if (a == "" || $uc < a) a = $uc
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
    awk -F'\t' -v s="$1" -v t="$2" -v p="$COL_PASS" -v rc="$COL_RATE" '$1 == s && $3 == t && $p == 0 && (m == "" || $rc < m) { m = $rc }
        END { print (m == "" ? "-" : "<" m) }' "$steps_tsv"
}
# bench_table_rows: one table row per transport (max rates, CPU per success, ratios).
# shellcheck disable=SC2153 # CPU_RATE is the script's
bench_table_rows() {
    local t tn hm km hc kc
    for t in $TRANSPORTS; do
        case "$t" in u1) tn="UDP" ;; t1) tn="TCP" ;; *) tn="$t" ;; esac
        hm="$(max_cell holdfast "$t")" km="$(max_cell kamailio "$t")"
        hc="$(cpu_at holdfast "$t")" kc="$(cpu_at kamailio "$t")"
        echo "| $tn (-t $t) | $hm | $km | $(ratio "$hm" "$km") | ${CPURATE[$t]:-$CPU_RATE}/s | $hc | $kc | $(ratio "$hc" "$kc") |"
    done
}
# bench_table_failures: per transport and server, why its probe or its series failed
# (fail_note SERVER TRANSPORT is the script's).
bench_table_failures() {
    local t srv n
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
    return 0
}
