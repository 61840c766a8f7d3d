#!/usr/bin/env bash
# bench/heldcalls.sh: sbcd's background cost with calls up and no traffic.
#
# What a box pays per second for the calls it holds between their
# messages: the shards' wheel ticks, the pacer, the runtime. sbcd only
# (a proxy has no such ticks to compare); each binary in SBCDS in turn,
# RUNS times, alternating, so that two builds are measured side by side.
#
# Per run, on 127.0.0.1 only: sbcd with a bench config (session timers of
# 600 s, so no refresh falls in the window), a SIPp callee, and a SIPp
# caller that places CALLS calls at 20/s and holds each for 120 s. After
# the ramp it reads sbcd's utime+stime (/proc/PID/stat) and the context
# switches of all its threads (/proc/PID/task/*/status) over SECS seconds,
# and prints them per second. Bounded: every process is killed at the end
# of its run, and a run takes about SECS + 10 seconds.
#
# Knobs (environment): SBCDS (binaries, default bin/sbcd), CALLS (40),
# SECS (30), RUNS (2), SIPP (sipp), OUT (/var/tmp/sbcd-bench-held).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SBCDS=${SBCDS:-$ROOT/bin/sbcd}
CALLS=${CALLS:-40}
SECS=${SECS:-30}
RUNS=${RUNS:-2}
SIPP=${SIPP:-sipp}
OUT=${OUT:-/var/tmp/sbcd-bench-held}

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

command -v "$SIPP" >/dev/null || die "$SIPP not found (apt-get install sip-tester)"
for b in $SBCDS; do [ -x "$b" ] || die "$b not built (make build)"; done
[ "$CALLS" -ge 1 ] && [ "$SECS" -ge 1 ] && [ "$RUNS" -ge 1 ] || die "CALLS, SECS and RUNS must be positive"
mkdir -p "$OUT"

# ticks: utime+stime of PID, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# switches: voluntary and involuntary context switches of PID's threads.
switches() { cat "/proc/$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }

hz=$(getconf CLK_TCK)
for run in $(seq "$RUNS"); do
	n=0
	for b in $SBCDS; do
		n=$((n + 1))
		d="$OUT/run$run-$n"
		rm -rf "$d"
		mkdir -p "$d/cdr"
		cat >"$d/sbcd.toml" <<-EOF
			[system]
			data_dir = "$d"

			[sip]
			listen = ["udp:127.0.0.1:25060"]
			upstream = "sip:127.0.0.1:25062"
			max_calls = 60000

			[session_timer]
			ttl = 600
			min_se = 90

			[[device]]
			name = "loadcaller"
			address = "127.0.0.1:25061"

			[cdr]
			dir = "$d/cdr"
		EOF
		limit=$((SECS + 30))
		timeout -s KILL "$limit" "$b" -config "$d/sbcd.toml" -log-level warn >"$d/sbcd.log" 2>&1 &
		pid=$!
		timeout -s KILL "$limit" "$SIPP" -sf "$ROOT/bench/sipp/uas.xml" -i 127.0.0.1 -p 25062 -nostdin \
			-trace_err -error_file "$d/uas_err.log" >/dev/null 2>&1 &
		uas=$!
		sleep 1
		alive=1
		kill -0 "$pid" 2>/dev/null || alive=0
		[ "$alive" = 1 ] || die "sbcd $b did not start: $(tail -3 "$d/sbcd.log")"
		timeout -s KILL "$limit" "$SIPP" -sf "$ROOT/bench/sipp/uac.xml" -i 127.0.0.1 -p 25061 -s callee \
			-r 20 -m "$CALLS" -d 120000 -nostdin -trace_err -error_file "$d/uac_err.log" \
			127.0.0.1:25060 >/dev/null 2>&1 &
		uac=$!
		sleep $((CALLS / 20 + 4))
		spid=$(pgrep -P "$pid" | head -1) # sbcd, under timeout
		[ -n "$spid" ] || die "sbcd $b is gone: $(tail -3 "$d/sbcd.log")"
		t1=$(ticks "$spid")
		c1=$(switches "$spid")
		sleep "$SECS"
		t2=$(ticks "$spid")
		c2=$(switches "$spid")
		kill "$uac" "$uas" 2>/dev/null || true
		kill "$pid" 2>/dev/null || true
		wait "$pid" "$uac" "$uas" 2>/dev/null || true
		cpu=$(awk -v a="$t1" -v b="$t2" -v hz="$hz" -v s="$SECS" 'BEGIN { printf "%.1f", (b - a) * 1000 / hz / s }')
		sw=$(awk -v a="$c1" -v b="$c2" -v s="$SECS" 'BEGIN { printf "%.0f", (b - a) / s }')
		echo "run $run  $b  calls $CALLS  cpu_ms_per_s $cpu  ctxsw_per_s $sw"
	done
done
