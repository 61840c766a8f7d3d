#!/usr/bin/env bash
# bench/keepalive.sh: NAT keep-alive cost, sbcd against Kamailio's nathelper
# side by side in one run (DESIGN.md §3 and §10 keep-alive target).
#
# Usage (from the repository root):
#   bash bench/keepalive.sh                        # both SUTs, 3 runs, 100,000 bindings
#   BINDINGS=5000 MEASURE=30 RUNS=1 SUT=kamailio bash bench/keepalive.sh   # quick pass
#   SUT=none bash bench/keepalive.sh               # the floor of each pacing alone
#
# For each run and each system under test (kamailio, then sbcd), all inside
# a network namespace of the script's own (NS, made fresh for each SUT run
# and removed after it: lo with SUT_HOST and SINK_HOST, and a tun device
# TUN; nothing leaves the namespace):
#   1. start the SUT on SUT_HOST as a registrar that keeps every binding alive with a
#      plain UDP datagram once per PERIOD: Kamailio 5.6 with
#      bench/kamailio/keepalive.cfg (usrloc in memory, nathelper 4-byte UDP
#      ping to every contact), or sbcd with a generated TOML ([nat_keepalive]
#      message "HELLO", batches of 100 every 10 ms; [registrar] no auth);
#   2. baseline: the SUT's idle CPU over BASELINE s with no bindings;
#   3. one probe REGISTER, then BINDINGS - SAMPLE REGISTERs from ONE SIPp UDP
#      socket SINK_HOST:SINK_PORT (bench/sipp/register.xml, user u<N>,
#      Contact <sip:u<N>@CONTACT_HOST:CONTACT_PORT>, Expires 3600) at REG_RATE/s;
#      every one must get 200;
#   4. SIPp exits and bench/udpsink takes over SINK_HOST:SINK_PORT (and
#      CONTACT_HOST:CONTACT_PORT, where nothing may arrive); it registers
#      SAMPLE more bindings, each from its own socket (their per-binding
#      intervals are the spread: the bulk bindings share one source and one
#      payload), waits WARMUP s (> one period: steady state), then for
#      MEASURE s counts datagrams by kernel receive time and reads the SUT's
#      utime+stime (/proc/PID/stat; for Kamailio summed over all its
#      processes) at the window's start and end: the loopback window;
#   5. the egress window: udpsink attaches to TUN, routes SINK_HOST through
#      it and takes SINK_HOST off lo, waits 5 s and counts for MEASURE s
#      again what leaves through TUN, with the SUT's CPU. On loopback the
#      kernel runs the receiving end of every datagram (the sink's socket
#      and its wake-up) inside the sender's system call and charges it to
#      the SUT; through TUN, as through a NIC on the box, it does not;
#   6. stop the SUT, remove the namespace.
# Per SUT, run and window: CPU per keep-alive in us = (window CPU - baseline
# rate x window) / datagrams (also without the baseline subtracted), datagrams per
# second, burst shape (datagrams less than 5 ms apart form one burst: median
# size and span; the most in any 1 ms and 10 ms), the sample bindings'
# interval min/max and largest deviation from PERIOD, and the SUT's PSS.
# Output: key=value lines (summary.txt, medians over RUNS), a table, the
# ratio sbcd / kamailio, and logs under OUT (scratch directories removed).
#
# Knobs (environment): SUT (both|kamailio|sbcd|none: the floor alone), BINDINGS, PERIOD, MEASURE,
# RUNS, SAMPLE, REG_RATE, BASELINE, WARMUP, BASE_PORT, CONTACT_HOST, SUT_HOST,
# SINK_HOST (addresses inside the namespace),
# CONTACT_PORT, SEND_INTERVAL and SEND_ONE_TIME (sbcd's pacing; default 10 ms and
# 100, DESIGN.md §3), KAM_SHM_MB, KAM_PKG_MB, SBCD (prebuilt binary), SIPP, OUT,
# INSTALL (1: apt-get install kamailio / sip-tester when missing), SINK_SCHED.
#
# The sink runs under SCHED_BATCH (SINK_SCHED=batch, chrt(1)): a batch task
# never preempts the task that wakes it (kernel/sched/fair.c: "Batch and
# idle tasks do not preempt non-idle tasks"). Under SCHED_OTHER the kernel
# often wakes the sink on the sender's CPU and switches to it at once, for
# every datagram: in the middle of one sendmmsg of 100 keep-alives sbcd was
# switched out and back in up to 100 times (perf sched, 2026-12-07), while
# Kamailio's sendto burst was never preempted, under either policy. No NIC
# does that to the box; sbcd's bill then depended on where the scheduler
# put the sink, the largest spread between its runs. As a batch task the sink still gets the
# CPU at the sender's next sleep or tick, and tun's queue (txqueuelen
# 65536) and the sink's 8-MB receive buffer hold a second's keep-alives,
# so nothing is lost: the drop counters stay in the report.
# SINK_SCHED=other measures as before 2026-12-07 (BENCHMARKS.md).
# At the defaults one SUT run takes about 3.5 minutes (2 SUTs x 3 runs: ~21 min;
# every step is bounded by a timeout, each SUT by its run's worst case).
# Needs root (ip netns, tun). Nothing leaves the namespace: SUT_HOST and
# SINK_HOST are its own, the Contact host must be in 127.0.0.0/8 (nathelper
# pings the stored "received" source address, sbcd the packet source; the
# sink also listens on the Contact address and reports anything that
# arrives there).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCEN="$ROOT/bench/sipp"
KAM_CFG="$ROOT/bench/kamailio/keepalive.cfg"
SUT=${SUT:-both}
BINDINGS=${BINDINGS:-100000}
PERIOD=${PERIOD:-30}
MEASURE=${MEASURE:-60}
RUNS=${RUNS:-3}
SAMPLE=${SAMPLE:-1000}
REG_RATE=${REG_RATE:-4000}
BASELINE=${BASELINE:-15}
WARMUP=${WARMUP:-$((PERIOD + 5))}
BASE_PORT=${BASE_PORT:-15060}
KAM_PORT=$BASE_PORT
SBCD_PORT=$((BASE_PORT + 1))
SINK_PORT=$((BASE_PORT + 10))
UPSTREAM_PORT=$((BASE_PORT + 19)) # nothing listens: no calls in this benchmark
CONTACT_HOST=${CONTACT_HOST:-127.0.0.2}
SUT_HOST=${SUT_HOST:-10.203.0.1}
SINK_HOST=${SINK_HOST:-10.203.1.1}
NS=sbcdka-$$ # the network namespace of one SUT run
TUN=kaeg0    # its tun device, the egress window's interface
NSX=(ip netns exec "$NS")
CONTACT_PORT=${CONTACT_PORT:-$((BASE_PORT + 9))}
SEND_INTERVAL=${SEND_INTERVAL:-10}  # sbcd nat_keepalive.send_interval, ms (the default pacing)
SEND_ONE_TIME=${SEND_ONE_TIME:-100} # sbcd nat_keepalive.send_one_time
SINK_SCHED=${SINK_SCHED:-batch}     # the sink's scheduling policy (chrt): batch or other (see the header)
FLOOR=${FLOOR:-1}                   # 1: also run bench/kafloor, the floor of each pacing
FLOOR_MEASURE=${FLOOR_MEASURE:-30}  # its windows, s
KAM_SHM_MB=${KAM_SHM_MB:-512}
KAM_PKG_MB=${KAM_PKG_MB:-32}
SIPP=${SIPP:-sipp}
INSTALL=${INSTALL:-1}
GO=${GO:-/usr/local/go/bin/go}
OUT=${OUT:-$(mktemp -d /var/tmp/sbcd-bench-keepalive.XXXXXX)}
TCK=$(getconf CLK_TCK)

case "$SUT" in
both) SUTS="kamailio sbcd" ;;
kamailio | sbcd) SUTS=$SUT ;;
none) SUTS="" ;; # the floor alone
*) echo "SUT must be both, kamailio, sbcd or none" >&2; exit 2 ;;
esac
[ -n "$SUTS" ] || [ "$FLOOR" = 1 ] || { echo "SUT=none needs FLOOR=1" >&2; exit 2; }
case "$SINK_SCHED" in batch | other) ;; *) echo "SINK_SCHED must be batch or other" >&2; exit 2 ;; esac
[ "$SAMPLE" -lt "$BINDINGS" ] || { echo "SAMPLE ($SAMPLE) must be below BINDINGS ($BINDINGS)" >&2; exit 2; }
[ "$WARMUP" -gt "$PERIOD" ] || { echo "WARMUP ($WARMUP) must exceed PERIOD ($PERIOD)" >&2; exit 2; }
[ "$MEASURE" -ge $((2 * PERIOD)) ] || echo "note: MEASURE < 2 x PERIOD: most sample bindings get one interval at most" >&2
case "$CONTACT_HOST" in 127.*) ;; *) echo "CONTACT_HOST must be in 127.0.0.0/8 (loopback only)" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "needs root: the SUTs run in a network namespace of the script's own" >&2; exit 2; }

mkdir -p "$OUT"

# ---- process bookkeeping: everything started is killed on exit ----------
# Only what is running now is listed (the current SUT's processes and its
# timeout wrapper, the current SIPp), and cleared once it has been stopped
# and reaped, so a recycled pid is never signalled.
SUT_PID=""
SUT_TPID=""
SUT_PIDS=()
SIPP_PID=""
SCRATCH=()
cleanup() {
	local p d
	for p in "$SIPP_PID" "$SUT_PID" "${SUT_PIDS[@]}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
	sleep 1
	for p in "$SIPP_PID" "$SUT_PID" "${SUT_PIDS[@]}" "$SUT_TPID"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ns_down
	for d in "${SCRATCH[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/keepalive.log" >&2; }
die() { log "FATAL: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
udp_listening() { "${NSX[@]}" ss -Hlun "src $1:$2" 2>/dev/null | grep -q .; }

# ns_up: a fresh namespace NS with lo up, SUT_HOST and SINK_HOST on lo and
# the tun device TUN up (no carrier until udpsink attaches to it), its queue
# long enough for Kamailio's burst of a second's keep-alives (the default
# 500 drops some).
ns_up() {
	ns_down
	ip netns add "$NS" || die "ip netns add $NS failed"
	"${NSX[@]}" ip link set lo up &&
		"${NSX[@]}" ip addr add "$SUT_HOST/32" dev lo &&
		"${NSX[@]}" ip addr add "$SINK_HOST/32" dev lo &&
		"${NSX[@]}" ip tuntap add "$TUN" mode tun &&
		"${NSX[@]}" ip link set "$TUN" txqueuelen 65536 up || die "setting up namespace $NS failed"
}
ns_down() { ip netns del "$NS" 2>/dev/null || true; }

# ---- prerequisites ---------------------------------------------------------
need=()
case " $SUTS " in *" kamailio "*) command -v kamailio >/dev/null || need+=(kamailio) ;; esac
command -v "$SIPP" >/dev/null || need+=(sip-tester)
[ "${#need[@]}" -eq 0 ] || apt_install "${need[@]}"
command -v "$SIPP" >/dev/null || die "sipp not found after install"
[ -f "$SCEN/register.xml" ] || die "missing $SCEN/register.xml"
mkdir -p "$OUT/bin"
SCRATCH+=("$OUT/bin") # the binaries built for this run
log "building bench/udpsink"
(cd "$ROOT" && timeout 300 "$GO" build -o "$OUT/bin/udpsink" ./bench/udpsink) >"$OUT/build.log" 2>&1 ||
	die "go build ./bench/udpsink failed: $(tail -5 "$OUT/build.log")"
SINK="$OUT/bin/udpsink"
if [ "$FLOOR" = 1 ]; then
	(cd "$ROOT" && timeout 300 "$GO" build -o "$OUT/bin/kafloor" ./bench/kafloor) >>"$OUT/build.log" 2>&1 ||
		die "go build ./bench/kafloor failed: $(tail -5 "$OUT/build.log")"
fi
case " $SUTS " in *" sbcd "*)
	if [ -z "${SBCD:-}" ]; then
		log "building sbcd"
		(cd "$ROOT" && timeout 300 "$GO" build -o "$OUT/bin/sbcd" ./cmd/sbcd) >>"$OUT/build.log" 2>&1 ||
			die "go build ./cmd/sbcd failed: $(tail -5 "$OUT/build.log")"
		SBCD="$OUT/bin/sbcd"
	fi
	[ -x "$SBCD" ] || die "$SBCD is not executable"
	;;
esac
case " $SUTS " in *" kamailio "*)
	[ -f "$KAM_CFG" ] || die "missing $KAM_CFG"
	pgrep -x kamailio >/dev/null && log "note: other kamailio processes are running (not ours; left alone)"
	;;
esac
command -v ip >/dev/null || die "ip (iproute2) not found"
[ -c /dev/net/tun ] || die "/dev/net/tun missing: the egress window needs tun"

# ---- systems under test ----------------------------------------------------
# sut_start_<name> DIR LIMIT: start on SUT_HOST:SUT_PORT, set SUT_PID (the
# main process), SUT_TPID (its timeout wrapper) and SUT_PIDS (every process
# whose CPU counts), bounded by LIMIT seconds.
SUT_PORT=""

child_of() { # child_of PPID: the first child of PPID, waiting up to 5 s
	local i c=""
	for i in $(seq 100); do
		c=$(pgrep -P "$1" | head -1 || true)
		[ -n "$c" ] && { echo "$c"; return 0; }
		sleep 0.05
	done
	return 1
}
wait_listen() { # wait_listen PORT WHAT LOG
	local i
	for i in $(seq 100); do
		alive "$SUT_PID" || die "$2 exited at start: $(tail -5 "$3")"
		udp_listening "$SUT_HOST" "$1" && return 0
		sleep 0.1
	done
	die "$2 not listening on $SUT_HOST:$1 after 10 s: $(tail -5 "$3")"
}

sut_start_kamailio() {
	local dir=$1 limit=$2
	SUT_PORT=$KAM_PORT
	mkdir -p "$dir/run"
	# -DD: no daemon, the main process stays our child; -E: log to stderr
	timeout -s KILL "$limit" "${NSX[@]}" kamailio -f "$KAM_CFG" -DD -E -l "udp:$SUT_HOST:$SUT_PORT" \
		-m "$KAM_SHM_MB" -M "$KAM_PKG_MB" -Y "$dir/run" -w "$dir/run" -P "$dir/run/kamailio.pid" \
		-A "NATPING_INTERVAL=$PERIOD" -A "CTL_SOCK=\"unix:$dir/run/ctl\"" \
		>"$dir/kamailio.log" 2>&1 &
	SUT_TPID=$!
	SUT_PID=$(child_of "$SUT_TPID") || die "kamailio did not start: $(tail -5 "$dir/kamailio.log")"
	wait_listen "$SUT_PORT" kamailio "$dir/kamailio.log"
	# all forked processes (receivers, timers, ctl, nathelper's "TIMER NH")
	local i n=0 prev=-1
	for i in $(seq 50); do
		n=$(pgrep -c -P "$SUT_PID" || true)
		[ "$n" -gt 0 ] && [ "$n" = "$prev" ] && break
		prev=$n
		sleep 0.2
	done
	mapfile -t SUT_PIDS < <(echo "$SUT_PID"; pgrep -P "$SUT_PID")
	timeout 10 kamcmd -s "unix:$dir/run/ctl" core.psx >"$dir/processes.txt" 2>&1 || true
}
sut_bindings_kamailio() {
	timeout 10 kamcmd -s "unix:$1/run/ctl" stats.get_statistics usrloc: 2>/dev/null |
		awk -F'= *' '/usrloc:registered_users/ { print $2 }'
}
# the pid of one Kamailio process by its description (core.psx)
kam_pid_of() { awk -v d="$2" '/PID:/ { p = $2 } $0 ~ "DSC: " d { print p; exit }' "$1/processes.txt"; }

sut_start_sbcd() {
	local dir=$1 limit=$2
	SUT_PORT=$SBCD_PORT
	mkdir -p "$dir/data"
	cat >"$dir/sbcd.toml" <<EOF
[system]
board = "none"
data_dir = "$dir/data"

[sip]
listen = ["udp:$SUT_HOST:$SUT_PORT"]
upstream = "sip:127.0.0.1:$UPSTREAM_PORT"
max_calls = 1000

[nat_keepalive]
message = "HELLO"
period = $PERIOD
send_interval = $SEND_INTERVAL
send_one_time = $SEND_ONE_TIME
mode = "message"
nated_only = true

[registrar]
max_bindings = $((BINDINGS + BINDINGS / 10 + 1000))
min_expires = 60
max_expires = 3600
auth = false
EOF
	timeout 60 "$SBCD" check "$dir/sbcd.toml" >"$dir/check.txt" 2>&1 ||
		die "sbcd check rejects the generated config: $(head -5 "$dir/check.txt")"
	timeout -s KILL "$limit" "${NSX[@]}" "$SBCD" -config "$dir/sbcd.toml" -log-level warn >"$dir/sbcd.log" 2>&1 &
	SUT_TPID=$!
	SUT_PID=$(child_of "$SUT_TPID") || die "sbcd did not start: $(tail -5 "$dir/sbcd.log")"
	wait_listen "$SUT_PORT" sbcd "$dir/sbcd.log"
	SUT_PIDS=("$SUT_PID") # one process: /proc/PID/stat counts all its threads
}
sut_bindings_sbcd() { echo ""; } # no binding count exported (yet)

sut_stop() {
	local dir=$1 msg
	if ! alive "$SUT_PID"; then
		echo "already gone" >"$dir/stop.txt"
		wait "$SUT_TPID" 2>/dev/null || true
		SUT_PID=""; SUT_TPID=""; SUT_PIDS=()
		ns_down
		return 0
	fi
	if ! msg=$(term_wait "$SUT_PID" 150); then
		msg="$msg: SIGKILL"
		kill -KILL "${SUT_PIDS[@]}" 2>/dev/null || true
	fi
	echo "$msg" >"$dir/stop.txt"
	sleep 0.5
	kill -KILL "${SUT_PIDS[@]}" 2>/dev/null || true # stray Kamailio children
	wait "$SUT_TPID" 2>/dev/null || true
	SUT_PID=""; SUT_TPID=""; SUT_PIDS=()
	ns_down
}

# ---- SIPp registration -----------------------------------------------------
# register DIR NAME COUNT: COUNT REGISTERs from SINK_HOST:SINK_PORT; sets
# REG_OK, REG_FAILED, REG_STATUS (first non-200 final response seen, if any)
# and REG_SECS.
REG_OK=0
REG_FAILED=0
REG_STATUS=""
REG_SECS=0
register() {
	local dir=$1 name=$2 n=$3 limit t0 t1 rc=0
	limit=$((n / REG_RATE * 3 + 60))
	t0=$(date +%s.%N)
	(cd "$dir" && exec timeout -k 5 "$limit" "${NSX[@]}" "$SIPP" -sf "$SCEN/register.xml" -i "$SINK_HOST" -p "$SINK_PORT" \
		-key contact_host "$CONTACT_HOST" -key contact_port "$CONTACT_PORT" \
		-m "$n" -r "$REG_RATE" -rp 1000 -l $((REG_RATE * 2)) -buff_size 4194304 \
		-nostdin -trace_err -error_file "$dir/${name}_err.log" -trace_stat -stf "$dir/${name}_stat.csv" -fd 1 \
		-timeout "${limit}s" -timeout_error \
		"$SUT_HOST:$SUT_PORT" >"$dir/${name}.out" 2>&1) &
	SIPP_PID=$!
	wait "$SIPP_PID" || rc=$?
	SIPP_PID=""
	t1=$(date +%s.%N)
	REG_SECS=$(calc "%.1f" "$t1 - $t0")
	REG_OK=$(sstat "$dir/${name}_stat.csv" 'SuccessfulCall(C)')
	REG_FAILED=$(sstat "$dir/${name}_stat.csv" 'FailedCall(C)')
	# SIPp logs the unexpected message whole, its status line on the first line
	REG_STATUS=$(grep -o "received 'SIP/2.0 [0-9][0-9][0-9][^']*" "$dir/${name}_err.log" 2>/dev/null | head -1 |
		sed "s/^received 'SIP\/2.0 //" | tr -d '\r' || true)
	[ -n "$REG_STATUS" ] || { grep -q -i timeout "$dir/${name}_err.log" 2>/dev/null && REG_STATUS="no response (timeout)"; } || true
	echo "sipp exit $rc" >>"$dir/${name}.out"
}

# ---- summary ---------------------------------------------------------------
SUMMARY=""
put() { echo "$1=$2" >>"$SUMMARY"; }
sk() { awk -F= -v k="$2" '$1 == k { print substr($0, length(k) + 2); exit }' "$1"; }

# window_keys SUT SINKFILE PRE KP BASE_TPS WORK: the summary keys of one of
# udpsink's windows (its keys prefixed PRE: "" for the loopback window,
# "egress." for the egress one) as SUT.KP<key>, and a log line.
window_keys() {
	local sut=$1 S=$2 pre=$3 kp=$4 base_tps=$5 work=$6 total win cpu_t label="egress window"
	[ -n "$pre" ] || label="loopback window"
	total=$(sk "$S" "${pre}dgrams.total"); win=$(sk "$S" "${pre}window_s"); cpu_t=$(sk "$S" "${pre}cpu.ticks")
	[ -n "$total" ] && [ -n "$win" ] && [ -n "$cpu_t" ] || { log "  $sut: no $label in the sink's report"; return 0; }
	put "$sut.${kp}window_s" "$win"
	put "$sut.${kp}cpu_s" "$(calc "%.2f" "$cpu_t / $TCK")"
	put "$sut.${kp}cpu_pct_core" "$(calc "%.3f" "$cpu_t / $TCK / $win * 100")"
	put "$sut.${kp}cpu_pct_core_net" "$(calc "%.3f" "($cpu_t - $base_tps * $win) / $TCK / $win * 100")"
	put "$sut.${kp}dgrams" "$total"
	put "$sut.${kp}dgrams_per_s" "$(sk "$S" "${pre}dgrams.per_s")"
	put "$sut.${kp}us_per_ping" "$(calc "%.2f" "$total > 0 ? $cpu_t / $TCK * 1e6 / $total : 0")"
	put "$sut.${kp}us_per_ping_net" "$(calc "%.2f" "$total > 0 ? ($cpu_t - $base_tps * $win) / $TCK * 1e6 / $total : 0")"
	if [ "$sut" = kamailio ]; then
		# nathelper's pinger process alone ("TIMER NH")
		local nh; nh=$(kam_pid_of "$work" "TIMER NH")
		if [ -n "$nh" ]; then
			local nht; nht=$(sk "$S" "${pre}cpu.pid.${nh}_ticks")
			put "$sut.${kp}pinger_cpu_s" "$(calc "%.2f" "${nht:-0} / $TCK")"
			put "$sut.${kp}pinger_us_per_ping" "$(calc "%.2f" "$total > 0 ? ${nht:-0} / $TCK * 1e6 / $total : 0")"
		fi
	fi
	local k
	for k in per_s.min per_s.max burst.max_in_1ms burst.max_in_10ms burst.max_in_100ms cluster.count \
		cluster.size_median cluster.size_max cluster.span_ms_median interval.n interval.min_s interval.max_s \
		interval.max_dev_pct; do
		put "$sut.${kp}$(echo "$k" | sed 's/burst\.max_in_/burst_max_/; s/\./_/g')" "$(sk "$S" "${pre}$k")"
	done
	put "$sut.${kp}sample_silent" "$(sk "$S" "${pre}sample.silent_in_window")"
	log "  $sut, $label: $total datagrams in ${win}s ($(sk "$S" "${pre}dgrams.per_s")/s), cpu $(calc "%.2f" "$cpu_t / $TCK")s" \
		"= $(calc "%.2f" "$total > 0 ? $cpu_t / $TCK * 1e6 / $total : 0") us/ping" \
		"($(calc "%.2f" "$total > 0 ? ($cpu_t - $base_tps * $win) / $TCK * 1e6 / $total : 0") net of idle)," \
		"max $(sk "$S" "${pre}burst.max_in_10ms") in 10 ms, intervals $(sk "$S" "${pre}interval.min_s")-$(sk "$S" "${pre}interval.max_s")s"
}

# ---- one SUT, one run --------------------------------------------------------
run_one() {
	local sut=$1 run=$2 d="$OUT/run$2/$1"
	mkdir -p "$d"
	local work; work=$(mktemp -d "/tmp/sbcd-keepalive-$sut.XXXXXX")
	SCRATCH+=("$work")
	local bulk=$((BINDINGS - SAMPLE))
	local limit=$((BASELINE + bulk / REG_RATE * 3 + 60 + 30 + WARMUP + 2 * MEASURE + 130))
	log "run $run $sut: start on $SUT_HOST in namespace $NS (bounded to ${limit}s)"
	ns_up
	"sut_start_$sut" "$work" "$limit"
	put "$sut.processes" "${#SUT_PIDS[@]}"
	sleep 2
	# idle CPU with no bindings
	local c0 c1 b0 b1 base_tps
	b0=$(date +%s.%N); c0=$(ticks "${SUT_PIDS[@]}")
	sleep "$BASELINE"
	c1=$(ticks "${SUT_PIDS[@]}"); b1=$(date +%s.%N)
	base_tps=$(calc "%.4f" "($c1 - $c0) / ($b1 - $b0)")
	put "$sut.idle_cpu_ms_per_s" "$(calc "%.2f" "$base_tps * 1000 / $TCK")"
	put "$sut.pss_idle_kb" "$(pss_kb "${SUT_PIDS[@]}")"

	# probe: one REGISTER, a clear message when the SUT does not register
	register "$d" probe 1
	if [ "$REG_OK" != 1 ]; then
		local why=${REG_STATUS:-"no 200 (see $d/probe_err.log)"}
		log "  $sut: REGISTER probe failed: $why$([ "$sut" = sbcd ] && echo ' (sbcd answers 405 until its registrar lands)')"
		put "$sut.status" "register_failed: $why"
		cp "$work"/*.log "$work"/*.toml "$d/" 2>/dev/null || true
		sut_stop "$d"
		return 0
	fi
	# the bulk (u1.. again: the probe's u1 is refreshed, not duplicated)
	log "  $sut: registering $bulk bindings from $SINK_HOST:$SINK_PORT at ${REG_RATE}/s"
	register "$d" register "$bulk"
	put "$sut.registered_sipp" "$REG_OK"
	put "$sut.register_failed" "$REG_FAILED"
	put "$sut.register_s" "$REG_SECS"
	log "  $sut: $REG_OK/$bulk registered in ${REG_SECS}s, $REG_FAILED failed${REG_STATUS:+ (first: $REG_STATUS)}"
	if [ "$REG_OK" != "$bulk" ]; then
		put "$sut.status" "register_failed: $REG_OK/$bulk ok${REG_STATUS:+, first failure $REG_STATUS}"
		cp "$work"/*.log "$work"/*.toml "$d/" 2>/dev/null || true
		sut_stop "$d"
		return 0
	fi
	alive "$SUT_PID" || die "$sut died during registration"

	# the sink: sample bindings, warm-up, measurement window
	local pids; pids=$(IFS=,; echo "${SUT_PIDS[*]}")
	log "  $sut: sink on $SINK_HOST:$SINK_PORT, $SAMPLE sample bindings, warm-up ${WARMUP}s, windows ${MEASURE}s on loopback, then ${MEASURE}s through $TUN"
	local src=0
	timeout -k 5 $((WARMUP + 2 * MEASURE + 100)) "${NSX[@]}" chrt "--$SINK_SCHED" 0 "$SINK" -addr "$SINK_HOST:$SINK_PORT,$CONTACT_HOST:$CONTACT_PORT" \
		-register "$SUT_HOST:$SUT_PORT" -sample "$SAMPLE" -contact "$CONTACT_HOST:$CONTACT_PORT" \
		-egress "$TUN" -egress-prefix "$SINK_HOST/32" \
		-warmup "${WARMUP}s" -measure "${MEASURE}s" -period "${PERIOD}s" -pids "$pids" \
		-out "$d/sink.txt" >"$d/sink.out" 2>&1 || src=$?
	[ "$src" = 0 ] || die "udpsink failed (exit $src): $(tail -3 "$d/sink.out")"
	local S="$d/sink.txt"
	local bind rss
	bind=$("sut_bindings_$sut" "$work")
	rss=$(pss_kb "${SUT_PIDS[@]}")
	local sut_alive=1 status=ok sreg
	alive "$SUT_PID" || sut_alive=0
	sreg=$(sk "$S" sample.registered)
	if [ "$sut_alive" = 0 ]; then status=died
	elif [ "$sreg" != "$SAMPLE" ]; then
		status="sample_register_failed: $sreg/$SAMPLE ($(grep '^sample.register\.' "$S" | tr '\n' ' '))"
	elif [ -n "$bind" ] && [ "$bind" != "$BINDINGS" ]; then status="bindings_mismatch: SUT reports $bind"
	fi
	[ "$status" = ok ] || log "  $sut: WARNING: $status"
	put "$sut.status" "$status"
	put "$sut.sample_registered" "$sreg"
	[ -n "$bind" ] && put "$sut.bindings_reported" "$bind"
	put "$sut.expected_per_s" "$(calc "%.1f" "$BINDINGS / $PERIOD")"
	window_keys "$sut" "$S" "" "" "$base_tps" "$work"
	window_keys "$sut" "$S" egress. egress_ "$base_tps" "$work"
	put "$sut.sink_drops" "$(sk "$S" sink.drops)"
	put "$sut.egress_tun_dropped" "$(sk "$S" egress.tun.dropped)"
	put "$sut.egress_tun_other" "$(sk "$S" egress.tun.other)"
	put "$sut.dgrams_to_contact" "$(sk "$S" "dgrams.addr.$CONTACT_HOST:$CONTACT_PORT")"
	put "$sut.payload_hex" "$(sk "$S" payload.0.hex)"
	put "$sut.payload_bytes" "$(sk "$S" payload.0.bytes)"
	put "$sut.payload_distinct" "$(sk "$S" payload.distinct)"
	put "$sut.pss_kb" "$rss"
	cp "$work"/*.log "$work"/*.toml "$work"/processes.txt "$d/" 2>/dev/null || true
	sut_stop "$d"
	[ "$sut_alive" = 1 ] || log "  $sut DIED during the window"
}

# ---- the floor of each pacing ----------------------------------------------
# run_floor PACING RUN: bench/kafloor sends BINDINGS/PERIOD datagrams a
# second from SUT_HOST to SINK_HOST:SINK_PORT, paced like sbcd (batch:
# SEND_ONE_TIME per sendmmsg, as few batches as that allows) or like
# nathelper (burst: a second's share of sendto once a second), through the
# same sink and both windows (FLOOR_MEASURE s each): what the kernel, the
# system calls and the wake-ups of that pacing cost on this machine, with
# nothing else running. Summary keys floor_PACING.*.
run_floor() {
	local pacing=$1 run=$2 sut=floor_$1 d="$OUT/run$2/floor_$1" rate=$((BINDINGS / PERIOD))
	mkdir -p "$d"
	local limit=$((2 * FLOOR_MEASURE + 60))
	log "run $run floor, $pacing pacing: $rate/s from $SUT_HOST (bounded to ${limit}s)"
	ns_up
	timeout -s KILL "$limit" "${NSX[@]}" "$OUT/bin/kafloor" -src "$SUT_HOST:$SBCD_PORT" -dst "$SINK_HOST:$SINK_PORT" \
		-rate "$rate" -pacing "$pacing" -batch "$SEND_ONE_TIME" >"$d/kafloor.out" 2>&1 &
	SUT_TPID=$!
	SUT_PID=$(child_of "$SUT_TPID") || die "kafloor did not start: $(tail -5 "$d/kafloor.out")"
	SUT_PIDS=("$SUT_PID")
	local src=0
	timeout -k 5 $((2 * FLOOR_MEASURE + 40)) "${NSX[@]}" chrt "--$SINK_SCHED" 0 "$SINK" -addr "$SINK_HOST:$SINK_PORT" \
		-egress "$TUN" -egress-prefix "$SINK_HOST/32" -warmup 5s -measure "${FLOOR_MEASURE}s" \
		-period "${PERIOD}s" -pids "$SUT_PID" -out "$d/sink.txt" >"$d/sink.out" 2>&1 || src=$?
	[ "$src" = 0 ] || die "udpsink failed (exit $src): $(tail -3 "$d/sink.out")"
	local status=ok
	alive "$SUT_PID" || status=died
	put "$sut.status" "$status"
	put "$sut.expected_per_s" "$rate"
	window_keys "$sut" "$d/sink.txt" "" "" 0 "$d"
	window_keys "$sut" "$d/sink.txt" egress. egress_ 0 "$d"
	put "$sut.egress_tun_dropped" "$(sk "$d/sink.txt" egress.tun.dropped)"
	sut_stop "$d"
}

# ---- runs, medians, table --------------------------------------------------
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "cores=$(nproc)"
	echo "kernel=$(uname -r)"
	echo "loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "kamailio=$(kamailio -v 2>/dev/null | sed -n 's/^version: //p' | head -1)"
	echo "sipp=$("$SIPP" -v 2>&1 | grep -o 'v[0-9.]*[^ ]*' | head -1)"
	echo "go=$("$GO" version 2>/dev/null | awk '{print $3}')"
	echo "sbcd=$([ -n "${SBCD:-}" ] && "$SBCD" version 2>/dev/null || true)"
	echo "bindings=$BINDINGS period=$PERIOD measure=$MEASURE warmup=$WARMUP sample=$SAMPLE reg_rate=$REG_RATE baseline=$BASELINE runs=$RUNS sink_sched=$SINK_SCHED"
} >"$OUT/machine.txt"

log "keep-alive bench: SUT=$SUT bindings=$BINDINGS period=${PERIOD}s window=${MEASURE}s runs=$RUNS; out $OUT"
for run in $(seq "$RUNS"); do
	mkdir -p "$OUT/run$run"
	SUMMARY="$OUT/run$run/summary.txt"
	: >"$SUMMARY"
	for s in $SUTS; do run_one "$s" "$run"; done
	if [ "$FLOOR" = 1 ]; then
		run_floor batch "$run"
		run_floor burst "$run"
	fi
	echo "loadavg_after_run=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
done

# median per key over the runs (numeric keys); first value otherwise
awk -F= '{ k = $1; v = substr($0, length(k) + 2)
	if (!(k in seen)) { seen[k] = 1; order[++n] = k }
	cnt[k]++; val[k, cnt[k]] = v }
	END { for (i = 1; i <= n; i++) { k = order[i]; c = cnt[k]
		num = 1; for (j = 1; j <= c; j++) if (val[k, j] !~ /^-?[0-9.]+$/) num = 0
		if (!num || c == 1) { print k "=" val[k, 1]; continue }
		for (a = 1; a <= c; a++) x[a] = val[k, a] + 0
		for (a = 1; a <= c; a++) for (b = a + 1; b <= c; b++) if (x[b] < x[a]) { t = x[a]; x[a] = x[b]; x[b] = t }
		m = (c % 2) ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2
		print k "=" m } }' "$OUT"/run*/summary.txt >"$OUT/summary.txt"

S="$OUT/summary.txt"
g() { sk "$1" "$2"; }
row() { # row FILE SUT LABEL KP: one window (KP "" loopback, egress_) of one run
	local f=$1 s=$2 p=$2.$4
	[ -n "$(g "$f" "$s.status")" ] || return 0
	if [ "$(g "$f" "$s.status")" != ok ]; then
		printf '%-11s %-6s %s\n' "$s" "$3" "$(g "$f" "$s.status")"
		return 0
	fi
	printf '%-11s %-6s %-8s %-8s %-9s %-9s %-8s %-14s %-9s %-8s %-9s %-9s %-8s %s\n' "$s" "$3" \
		"$(g "$f" "${p}dgrams_per_s")" "$(g "$f" "${p}cpu_pct_core")" "$(g "$f" "$s.idle_cpu_ms_per_s")" \
		"$(g "$f" "${p}us_per_ping")" "$(g "$f" "${p}us_per_ping_net")" "$(g "$f" "${p}cluster_size_median")/$(g "$f" "${p}cluster_span_ms_median")ms" \
		"$(g "$f" "${p}burst_max_10ms")" "$(g "$f" "${p}burst_max_1ms")" "$(g "$f" "${p}interval_min_s")" \
		"$(g "$f" "${p}interval_max_s")" "$(g "$f" "${p}interval_max_dev_pct")" "$(g "$f" "$s.status")"
}
# table KP TITLE: the table of one window, and the ratio sbcd / kamailio
table() {
	local kp=$1 k b
	echo
	echo "== keep-alive, $2: $BINDINGS bindings, period ${PERIOD} s, ${MEASURE}-s window ($SAMPLE sample bindings for intervals) =="
	printf '%-11s %-6s %-8s %-8s %-9s %-9s %-8s %-14s %-9s %-8s %-9s %-9s %-8s %s\n' sut run pings/s cpu%core idle_ms/s \
		us/ping us/ping* burst in_10ms in_1ms iv_min_s iv_max_s iv_dev% status
	local all=$SUTS
	[ "$FLOOR" = 1 ] && all="$all floor_batch floor_burst"
	for s in $all; do
		for run in $(seq "$RUNS"); do row "$OUT/run$run/summary.txt" "$s" "$run" "$kp"; done
		[ "$RUNS" -gt 1 ] && row "$S" "$s" median "$kp"
	done
	k=$(g "$S" "kamailio.${kp}us_per_ping_net"); b=$(g "$S" "sbcd.${kp}us_per_ping_net")
	if [ -n "$k" ] && [ -n "$b" ] && [ "$(g "$S" kamailio.status)" = ok ] && [ "$(g "$S" sbcd.status)" = ok ] &&
		awk "BEGIN { exit !($k > 0 && $(g "$S" "kamailio.${kp}us_per_ping") > 0) }"; then
		echo "sbcd / kamailio CPU per ping, $2 (net of idle): $(calc "%.3f" "$b / $k") (target <= 0.5);" \
			"gross: $(calc "%.3f" "$(g "$S" "sbcd.${kp}us_per_ping") / $(g "$S" "kamailio.${kp}us_per_ping")")"
	elif [ "$SUT" = both ]; then
		echo "sbcd / kamailio, $2: not available (too few CPU ticks? use more BINDINGS / a longer MEASURE)" \
			"(kamailio: $(g "$S" kamailio.status); sbcd: $(g "$S" sbcd.status))"
	fi
	if [ "$FLOOR" = 1 ]; then
		local fb fk
		fb=$(g "$S" "floor_batch.${kp}us_per_ping"); fk=$(g "$S" "floor_burst.${kp}us_per_ping")
		if [ -n "$fb" ] && [ -n "$fk" ] && awk "BEGIN { exit !($fb > 0 && $fk > 0) }"; then
			echo "floors, $2: sbcd's pacing $fb us, nathelper's $fk us per ping;" \
				"$([ -n "$k" ] && echo "floor of sbcd's pacing / kamailio: $(calc "%.3f" "$fb / $(g "$S" "kamailio.${kp}us_per_ping")");")" \
				"$([ -n "$b" ] && echo "sbcd / floor of its pacing: $(calc "%.3f" "$(g "$S" "sbcd.${kp}us_per_ping") / $fb")")"
		fi
	fi
	if [ "$(g "$S" sbcd.status)" = ok ]; then
		local dev b10 big burst
		dev=$(g "$S" "sbcd.${kp}interval_max_dev_pct"); b10=$(g "$S" "sbcd.${kp}burst_max_10ms")
		big=$(g "$S" "sbcd.${kp}cluster_size_max")
		# A burst is a run of datagrams less than 5 ms apart (a batch: its
		# datagrams leave microseconds apart, batches send_interval apart).
		burst="no burst over send_one_time ($SEND_ONE_TIME): $(calc "%s" "$big <= $SEND_ONE_TIME ? \"met\" : \"NOT met\"") (largest $big; most in any 10 ms $b10)"
		if [ -n "$kp" ]; then
			# tun has no kernel receive time: udpsink's read times bunch
			# what a late wake-up of the reader finds queued
			burst="largest burst by read time $big, most in any 10 ms $b10 (bursts are judged on the loopback window's kernel times)"
		fi
		echo "sbcd intervals within 1 % of the period: $(calc "%s" "$dev <= 1 ? \"met\" : \"NOT met\"") (largest deviation $dev %); $burst"
	fi
}
{
	echo "== machine =="
	cat "$OUT/machine.txt"
	echo
	echo "== summary (key=value; medians of $RUNS run(s)) =="
	cat "$S"
	table "" "loopback (the sink's receiving charged to the SUT)"
	table egress_ "egress through $TUN (as through a NIC: the SUT's own cost)"
	echo "(us/ping* = net of the SUT's idle CPU; burst = median datagrams per burst (gaps < 5 ms) / its span;"
	echo " in_10ms / in_1ms = most datagrams in any 10 ms / 1 ms; iv = sample bindings' intervals, dev% = largest |iv - period| / period)"
	echo "raw logs: $OUT"
} | tee "$OUT/report.txt"
