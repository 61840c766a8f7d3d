#!/usr/bin/env bash
# bench/load.sh: SIPp load through sbcd, and through Kamailio 5.6 side by side
# with it, on loopback (issues 3 and 6, DESIGN.md §10).
#
# Usage (from the repository root; `make bench` runs SUT=both, `make
# bench-load` sbcd alone; both build bin/sbcd first):
#   bash bench/load.sh                        # sbcd alone (SUT=sbcd)
#   SUT=both RUNS=3 bash bench/load.sh        # kamailio then sbcd per run, ratios
#   RUNS=3 bash bench/load.sh                 # medians of 3 runs (~13 min per run and SUT)
#   PHASES="rate" RATES="500 1000" STEP_SECS=5 bash bench/load.sh   # quick pass
#   SUT=both PHASES=teardown bash bench/load.sh   # dead calls (~2.5 min per SUT)
#   PHASES=refresh bash bench/load.sh             # 50,000 refreshed calls (~4 min)
#
# SIPp caller (bench/sipp/uac.xml) -> system under test -> SIPp callee
# (bench/sipp/uas.xml), all on 127.0.0.1, the same scenarios for every SUT.
# The caller offers Session-Expires 600 (Min-SE 90), the callee answers
# 600;refresher=uac. Systems under test (SUT=sbcd|kamailio|both):
#   sbcd      the B2BUA with session timers on both legs (ttl 600, min_se 90)
#             and CDRs to a directory on disk. Memory: VmRSS.
#   kamailio  Kamailio 5.6 (Debian package, installed with apt-get when
#             missing, INSTALL=1) with bench/kamailio/load.cfg: a stateful
#             record-routing proxy, dialog + sst modules tracking every call
#             (dialog timeout from Session-Expires, Session-Expires/Min-SE 90
#             added when the caller asks for none, BYE on timeout), shared
#             memory KAM_SHM_MB, private memory KAM_PKG_MB per process,
#             KAM_CHILDREN UDP receivers. Memory: shared-memory real_used
#             (kamcmd core.shmmem; "used" and the processes' total PSS are
#             reported too). CPU: utime+stime summed over all its processes.
#   both      per run kamailio, then sbcd, and a table of sbcd/kamailio ratios.
# Phases:
#   rate   step the call rate (RATES, STEP_SECS s each, 1-s calls); stop at the
#          first step with >= FAIL_PCT % failed calls or where SIPp reaches
#          < KEEPUP_PCT % of the offered rate. Per step: achieved rate,
#          failed %, SUT CPU seconds (/proc/PID/stat utime+stime) and
#          CPU us/call, SUT memory (peak).
#   hold   for each N in HOLDS: fresh SUT, idle memory, ramp N long calls
#          (-d 300000) at HOLD_RATE calls/s, memory when N are up and again
#          after SETTLE_SECS s (past sipgo's 32 s transaction retention,
#          Kamailio's 5 s tm wait timer): (memory - idle) / N bytes per call.
#   churn  CHURN_RATE calls/s of 1-s calls for CHURN_SECS s; memory every
#          second during the load and AFTER_SECS s after it.
#   teardown  dead-call detection (not in the default PHASES): TEARDOWN_CALLS
#          calls at TEARDOWN_RATE calls/s whose caller (bench/sipp/uac_dead.xml)
#          asks for Session-Expires TEARDOWN_SE;refresher=uac, ACKs, and never
#          refreshes; the callee (uas_timer.xml) answers SE;refresher=uac and
#          every refresh. sbcd (ttl TEARDOWN_SE, min_se 90) must BYE the call at
#          SE - min(32, SE/3) (60 s for SE 90), Kamailio (dialog timeout from
#          Session-Expires) at SE. Per call, SIPp measures 200 received -> BYE
#          received (start_rtd/rtd, -trace_rtt: 1 ms resolution); reported as
#          measured - expected in ms (min, p50, p99, max, share within
#          100 ms), calls with no BYE, and sbcd's CDR end reasons.
#   refresh  refresh punctuality, sbcd only (a proxy does not refresh;
#          SUT=kamailio skips it; not in the default PHASES): REFRESH_CALLS
#          calls ramped at HOLD_RATE calls/s with Session-Expires REFRESH_SE,
#          sbcd (ttl REFRESH_SE, min_se 90) the refresher on both legs, so it
#          refreshes every SE/2 on each; each call is held REFRESH_HOLD_SECS s
#          past the ramp (-d = ramp + REFRESH_HOLD_SECS) and the caller BYEs
#          it. Caller (uac_refresh.xml) and callee (uas_timer.xml) answer every
#          refresh and time the interval: 200 of the INVITE, then 200 of each
#          refresh, to the next refresh. Lateness = interval - SE/2 (ms; per
#          leg and both: p50, p99, max, share within 20 ms); sbcd's own
#          figures from its "session refreshes" log line at SIGTERM ("-" when
#          it has none); refreshes sent per leg from its CDRs.
# Output: key=value lines (summary.txt, medians over RUNS when RUNS > 1), a
# human table, and raw logs under OUT (a temp dir on disk, printed at the end).
#
# Knobs (environment): SUT, SBCD, SIPP, RUNS, PHASES, RATES, STEP_SECS,
# CALL_MS, FAIL_PCT, KEEPUP_PCT, HOLDS, HOLD_RATE, SETTLE_SECS, CHURN_RATE,
# CHURN_SECS, AFTER_SECS, TEARDOWN_CALLS, TEARDOWN_RATE, TEARDOWN_SE,
# REFRESH_CALLS, REFRESH_HOLD_SECS, REFRESH_SE, BASE_PORT, OUT, SIPP_TRACE,
# REF_RATE (the rate of the headline CPU-per-call ratio), KAM_SHM_MB,
# KAM_PKG_MB, KAM_CHILDREN, INSTALL.
# Another system under test: add sut_start_<name>, sut_mem_<name>,
# sut_stop_<name> and sut_kill_<name> below and run with SUT=<name>; the
# phases use sut_start, sut_mem_kb, sut_ticks, sut_pss_kb, sut_stop and
# sut_kill (SUT_PID: the main process, SUT_PIDS: every process whose CPU and
# memory count).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCEN="$ROOT/bench/sipp"
KAM_CFG="$ROOT/bench/kamailio/load.cfg"
SUT=${SUT:-sbcd}
SBCD=${SBCD:-$ROOT/bin/sbcd}
KAM_SHM_MB=${KAM_SHM_MB:-1024} # 50,000 dialogs + transactions at the peak rate
KAM_PKG_MB=${KAM_PKG_MB:-16}   # per process (default 8)
KAM_CHILDREN=${KAM_CHILDREN:-4} # UDP receivers: 2 cores, shared with 2 SIPps
INSTALL=${INSTALL:-1}
REF_RATE=${REF_RATE:-1500}
SIPP=${SIPP:-sipp}
RUNS=${RUNS:-1}
PHASES=${PHASES:-"rate hold churn"}
RATES=${RATES:-"250 500 1000 1500 2000 2500 3000 4000 5000 6000 7000 8000 10000"}
STEP_SECS=${STEP_SECS:-20}
CALL_MS=${CALL_MS:-1000}
FAIL_PCT=${FAIL_PCT:-0.5}
KEEPUP_PCT=${KEEPUP_PCT:-95}
HOLDS=${HOLDS:-"10000 50000"}
HOLD_RATE=${HOLD_RATE:-2000}
SETTLE_SECS=${SETTLE_SECS:-40}
CHURN_RATE=${CHURN_RATE:-1500}
CHURN_SECS=${CHURN_SECS:-60}
AFTER_SECS=${AFTER_SECS:-40}
TEARDOWN_CALLS=${TEARDOWN_CALLS:-200}
TEARDOWN_RATE=${TEARDOWN_RATE:-50}
TEARDOWN_SE=${TEARDOWN_SE:-90}
REFRESH_CALLS=${REFRESH_CALLS:-50000}
REFRESH_HOLD_SECS=${REFRESH_HOLD_SECS:-150}
REFRESH_SE=${REFRESH_SE:-90}
BASE_PORT=${BASE_PORT:-25060}
SUT_PORT=$BASE_PORT
UAC_PORT=$((BASE_PORT + 1))
UAS_PORT=$((BASE_PORT + 2))
MAX_CALLS=${MAX_CALLS:-60000}
OUT=${OUT:-$(mktemp -d /var/tmp/sbcd-bench-load.XXXXXX)}
SIPP_COMMON=(-i 127.0.0.1 -buff_size 4194304 -max_socket 16384 -nostdin -trace_err -trace_stat -fd 1)
# SIPP_TRACE=1: every message both SIPps send and receive, in each step's
# directory (*_messages.log; for tiny runs only)
[ "${SIPP_TRACE:-0}" = 1 ] && SIPP_COMMON+=(-trace_msg)
TCK=$(getconf CLK_TCK)

case "$SUT" in
both) SUTS="kamailio sbcd" ;;
*) SUTS=$SUT ;;
esac
for s in $SUTS; do
	case "$s" in sbcd | kamailio) ;; *) echo "SUT must be sbcd, kamailio or both" >&2; exit 2 ;; esac
done

mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # -t u1: one UDP socket per SIPp

# ---- process bookkeeping: everything started is killed on exit ----------
# PIDS: SIPp and timeout wrappers; SUT_PIDS: the running SUT's processes
# (cleared once it has been stopped and reaped, so a recycled pid is never
# signalled).
PIDS=()
SUT_PID=""
SUT_TPID=""
SUT_PIDS=()
cleanup() {
	local p
	for p in "${SUT_PIDS[@]}" "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 1
	for p in "${SUT_PIDS[@]}" "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/load.log" >&2; }
die() { log "FATAL: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ---- prerequisites ---------------------------------------------------------
need=()
case " $SUTS " in *" kamailio "*) command -v kamailio >/dev/null && command -v kamcmd >/dev/null || need+=(kamailio) ;; esac
command -v "$SIPP" >/dev/null || need+=(sip-tester)
[ "${#need[@]}" -eq 0 ] || apt_install "${need[@]}"
command -v "$SIPP" >/dev/null || die "sipp not found (Debian package sip-tester)"
case " $SUTS " in *" sbcd "*) [ -x "$SBCD" ] || die "$SBCD not built (make build)" ;; esac
case " $SUTS " in *" kamailio "*)
	if ! command -v kamailio >/dev/null || ! command -v kamcmd >/dev/null; then die "kamailio/kamcmd not found after install"; fi
	[ -f "$KAM_CFG" ] || die "missing $KAM_CFG"
	timeout 30 kamailio -c -f "$KAM_CFG" -l "udp:127.0.0.1:$SUT_PORT" >"$OUT/kamailio-check.txt" 2>&1 ||
		die "kamailio -c rejects $KAM_CFG: $(grep -m3 -i error "$OUT/kamailio-check.txt")"
	pgrep -x kamailio >/dev/null && log "note: other kamailio processes are running (not ours; left alone)"
	;;
esac
for f in uac.xml uas.xml uac_dead.xml uac_refresh.xml uas_timer.xml; do [ -f "$SCEN/$f" ] || die "missing $SCEN/$f"; done
for v in TEARDOWN_SE REFRESH_SE; do
	# RFC 4028 §4: no session interval below 90 s (sbcd's min_se here)
	[ "${!v}" -ge 90 ] 2>/dev/null || die "$v must be a whole number of seconds >= 90"
done
for p in "$SUT_PORT" "$UAC_PORT" "$UAS_PORT"; do
	ss -Hlun "src 127.0.0.1:$p" 2>/dev/null | grep -q . && die "UDP 127.0.0.1:$p is in use (set BASE_PORT)"
done

# ---- /proc readings ------------------------------------------------------
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# sut_ticks: utime+stime over the SUT's processes (clock ticks); sut_pss_kb:
# their summed PSS (bench/lib.sh)
sut_ticks() { ticks "${SUT_PIDS[@]}"; }
sut_sticks() { sticks "${SUT_PIDS[@]}"; }
sut_ctxsw() { ctxsw "${SUT_PIDS[@]}"; }
sut_pss_kb() { pss_kb "${SUT_PIDS[@]}"; }
# udp_drops PORT: datagrams the kernel dropped on the UDP socket bound to
# 127.0.0.1:PORT (receive buffer full), from /proc/net/udp's drops column
udp_drops() {
	awk -v p="$(printf '%04X' "$1")" '$2 == "0100007F:" p { d += $NF } END { print d + 0 }' /proc/net/udp
}

# ---- system under test ---------------------------------------------------
# sut_start DIR LIMIT [TTL]: starts the SUT (bounded by LIMIT seconds), sets
# SUT_PID, SUT_TPID (its timeout wrapper) and SUT_PIDS. TTL: sbcd's
# [session_timer] ttl (default 600; Kamailio takes Session-Expires from the
# calls and ignores it).
sut_start() { "sut_start_$SUT" "$@"; }
# sut_mem_kb: the SUT's memory figure in kB (sbcd: VmRSS; kamailio: shm real_used)
sut_mem_kb() { "sut_mem_$SUT"; }
# sut_stop DIR: graceful stop (noted in DIR/stop.txt); sut_kill: at once, no
# BYEs (after the hold phase, with the calls still up and SIPp gone)
sut_stop() { "sut_stop_$SUT" "$@"; SUT_PID=""; SUT_TPID=""; SUT_PIDS=(); }
sut_kill() { "sut_kill_$SUT"; SUT_PID=""; SUT_TPID=""; SUT_PIDS=(); }
# sut_note KEYPREFIX: extra memory readings (put KEYPREFIX.<what>)
sut_note() {
	put "$1.pss_kb" "$(sut_pss_kb)"
	if declare -F "sut_note_$SUT" >/dev/null; then "sut_note_$SUT" "$1"; fi
}

sut_start_sbcd() {
	local dir=$1 limit=$2 ttl=${3:-600}
	mkdir -p "$dir/cdr"
	cat >"$dir/sbcd.toml" <<EOF
[system]
data_dir = "$dir"

[sip]
listen = ["udp:127.0.0.1:$SUT_PORT"]
upstream = "sip:127.0.0.1:$UAS_PORT"
max_calls = $MAX_CALLS

[session_timer]
ttl = $ttl
min_se = 90

[[device]]
name = "loadcaller"
address = "127.0.0.1:$UAC_PORT"

[cdr]
dir = "$dir/cdr"

[trace]
enabled = false
EOF
	# timeout bounds its life even if this script is killed hard
	timeout -s KILL "$limit" "$SBCD" -config "$dir/sbcd.toml" -log-level info >"$dir/sbcd.log" 2>&1 &
	SUT_TPID=$!
	PIDS+=("$SUT_TPID")
	local i
	SUT_PID=""
	for i in $(seq 50); do
		SUT_PID=$(pgrep -P "$SUT_TPID" || true)
		[ -n "$SUT_PID" ] && break
		sleep 0.05
	done
	[ -n "$SUT_PID" ] || die "sbcd did not start: $(tail -5 "$dir/sbcd.log")"
	SUT_PIDS=("$SUT_PID") # one process: /proc/PID/stat counts all its threads
	for i in $(seq 50); do
		alive "$SUT_PID" || die "sbcd exited at start: $(tail -5 "$dir/sbcd.log")"
		if ss -Hlun "sport = :$SUT_PORT" | grep -q .; then return 0; fi
		sleep 0.1
	done
	die "sbcd not listening on 127.0.0.1:$SUT_PORT after 5 s"
}
sut_mem_sbcd() { rss_kb "$SUT_PID"; }
sut_kill_sbcd() { kill -KILL "$SUT_PID" 2>/dev/null || true; wait "$SUT_TPID" 2>/dev/null || true; }

# sut_stop_sbcd DIR: SIGTERM, up to 45 s, then SIGQUIT and SIGKILL (noted in DIR/stop.txt).
sut_stop_sbcd() {
	local dir=$1 msg
	alive "$SUT_PID" || { echo "sut already gone" >"$dir/stop.txt"; wait "$SUT_TPID" 2>/dev/null || true; return 0; }
	# sbcd's Shutdown BYEs what is up and waits up to 40 s (Timer F) for its
	# pending transactions; 45 s tells that wait from a hang
	if msg=$(term_wait "$SUT_PID" 450); then
		echo "$msg" >"$dir/stop.txt"
		wait "$SUT_TPID" 2>/dev/null || true
		return 0
	fi
	# Go prints every goroutine's stack on SIGQUIT: the evidence of the hang
	echo "$msg: SIGQUIT (goroutine dump in sbcd.log), then SIGKILL" >"$dir/stop.txt"
	kill -QUIT "$SUT_PID" 2>/dev/null || true
	sleep 2
	kill -KILL "$SUT_PID" 2>/dev/null || true
	wait "$SUT_TPID" 2>/dev/null || true
}

# Kamailio: bench/kamailio/load.cfg, in the foreground (-DD: the main process
# stays our child, -E: log to stderr), its binrpc socket in DIR/run/ctl.
kam_ctl() { timeout 5 kamcmd -s "unix:$KAM_RUN/ctl" "$@" 2>/dev/null; }
KAM_RUN=""
sut_start_kamailio() {
	local dir=$1 limit=$2
	KAM_RUN="$dir/run"
	mkdir -p "$KAM_RUN"
	timeout -s KILL "$limit" kamailio -f "$KAM_CFG" -DD -E -l "udp:127.0.0.1:$SUT_PORT" \
		-m "$KAM_SHM_MB" -M "$KAM_PKG_MB" -n "$KAM_CHILDREN" -Y "$KAM_RUN" -w "$KAM_RUN" -P "$KAM_RUN/kamailio.pid" \
		-A "CTL_SOCK=\"unix:$KAM_RUN/ctl\"" -A "UAS_PORT=$UAS_PORT" \
		-A "UAS_URI=\"sip:127.0.0.1:$UAS_PORT\"" -A "UAC_URI=\"sip:127.0.0.1:$UAC_PORT\"" \
		>"$dir/kamailio.log" 2>&1 &
	SUT_TPID=$!
	PIDS+=("$SUT_TPID")
	local i
	SUT_PID=""
	for i in $(seq 100); do
		SUT_PID=$(pgrep -P "$SUT_TPID" | head -1 || true)
		[ -n "$SUT_PID" ] && break
		sleep 0.05
	done
	[ -n "$SUT_PID" ] || die "kamailio did not start: $(tail -5 "$dir/kamailio.log")"
	SUT_PIDS=("$SUT_PID")
	for i in $(seq 100); do
		alive "$SUT_PID" || die "kamailio exited at start: $(tail -5 "$dir/kamailio.log")"
		if ss -Hlun "sport = :$SUT_PORT" | grep -q . && [ -S "$KAM_RUN/ctl" ]; then break; fi
		sleep 0.1
	done
	ss -Hlun "sport = :$SUT_PORT" | grep -q . || die "kamailio not listening on 127.0.0.1:$SUT_PORT after 10 s"
	# every forked process (receivers, timers, ctl, dialog/tm timers)
	local n=0 prev=-1
	for i in $(seq 50); do
		n=$(pgrep -c -P "$SUT_PID" || true)
		[ "$n" -gt 0 ] && [ "$n" = "$prev" ] && break
		prev=$n
		sleep 0.2
	done
	mapfile -t SUT_PIDS < <(echo "$SUT_PID"; pgrep -P "$SUT_PID")
	kam_ctl core.psx >"$dir/processes.txt" || true
}
# kam_shm FIELD: a field of core.shmmem in kB (used, real_used, max_used, free)
# (0 when Kamailio does not answer, e.g. it died: pipefail and set -e would
# otherwise end the whole script at the next r=$(sut_mem_kb))
kam_shm() { { kam_ctl core.shmmem || true; } | awk -v f="$1" '$1 == f ":" { printf "%d\n", $2 / 1024; found = 1 } END { if (!found) print 0 }'; }
sut_mem_kamailio() { kam_shm real_used; }
sut_note_kamailio() {
	local out
	out=$(kam_ctl core.shmmem || true)
	put "$1.shm_used_kb" "$(echo "$out" | awk '$1 == "used:" { printf "%d", $2 / 1024 }')"
	put "$1.shm_real_used_kb" "$(echo "$out" | awk '$1 == "real_used:" { printf "%d", $2 / 1024 }')"
	put "$1.shm_max_used_kb" "$(echo "$out" | awk '$1 == "max_used:" { printf "%d", $2 / 1024 }')"
	put "$1.dlg_active" "$({ kam_ctl dlg.stats_active || true; } | awk '$1 == "all:" { print $2 }')"
}
sut_kill_kamailio() {
	kill -KILL "${SUT_PIDS[@]}" 2>/dev/null || true
	wait "$SUT_TPID" 2>/dev/null || true
}
# sut_stop_kamailio DIR: SIGTERM to the main process (it stops its children),
# up to 15 s, then SIGKILL to every process (noted in DIR/stop.txt)
sut_stop_kamailio() {
	local dir=$1 msg
	if ! alive "$SUT_PID"; then
		echo "sut already gone" >"$dir/stop.txt"
		kill -KILL "${SUT_PIDS[@]}" 2>/dev/null || true
		wait "$SUT_TPID" 2>/dev/null || true
		return 0
	fi
	msg=$(term_wait "$SUT_PID" 150) || msg="$msg: SIGKILL"
	echo "$msg" >"$dir/stop.txt"
	sleep 0.3
	kill -KILL "${SUT_PIDS[@]}" 2>/dev/null || true # stray children
	wait "$SUT_TPID" 2>/dev/null || true
}

# ---- SIPp ------------------------------------------------------------------
# uas_start DIR LIMIT [SCENARIO [SIPP_ARG...]]: the callee, uas.xml unless
# SCENARIO (a file in bench/sipp) is given, with SIPP_ARGs added
UAS_PID=""
uas_start() {
	local dir=$1 limit=$2 scen=${3:-uas.xml}
	local extra=("${@:4}")
	(cd "$dir" && exec timeout -k 5 "$limit" "$SIPP" -sf "$SCEN/$scen" "${SIPP_COMMON[@]}" -p "$UAS_PORT" \
		-error_file "$dir/uas_err.log" -stf "$dir/uas_stat.csv" -timeout "${limit}s" "${extra[@]}" \
		>"$dir/uas.out" 2>&1) &
	UAS_PID=$!
	PIDS+=("$UAS_PID")
	sleep 0.5
}
uas_stop() {
	kill -TERM "$UAS_PID" 2>/dev/null || true
	# timeout forwards TERM to SIPp; the subshell exits with it
	wait "$UAS_PID" 2>/dev/null || true
}
# uac_start DIR LIMIT RATE CALLS CONCURRENCY DURATION_MS [SCENARIO [SIPP_ARG...]]:
# the caller, uac.xml unless SCENARIO (a file in bench/sipp) is given, with
# SIPP_ARGs added
UAC_PID=""
uac_start() {
	local dir=$1 limit=$2 rate=$3 calls=$4 conc=$5 dur=$6 scen=${7:-uac.xml}
	local extra=("${@:8}")
	(cd "$dir" && exec timeout -k 5 "$limit" "$SIPP" -sf "$SCEN/$scen" "${SIPP_COMMON[@]}" -p "$UAC_PORT" \
		-s callee -r "$rate" -rp 1000 -m "$calls" -l "$conc" -d "$dur" \
		-error_file "$dir/uac_err.log" -stf "$dir/uac_stat.csv" -trace_screen -screen_file "$dir/uac_screen.log" \
		"${extra[@]}" "127.0.0.1:$SUT_PORT" >"$dir/uac.out" 2>&1) &
	UAC_PID=$!
	PIDS+=("$UAC_PID")
}

# late_1xx ERRFILE: calls the SIPp caller aborted because a provisional
# response arrived after the 2xx it had already ACKed. A proxy relays the
# callee's 180 and 200 from different receiver processes and can reorder them
# (Kamailio does, a few per thousand calls at 500/s); the call itself was set
# up (and SIPp BYEs it), and a UA discards such a 1xx, but uac.xml (the same
# for every SUT) has no place for it after the ACK. Counted apart, not as a
# failure of the SUT: failed_pct excludes them, failed_pct_sipp is SIPp's view.
late_1xx() {
	[ -s "$1" ] || { echo 0; return; }
	grep -c "Aborting call on unexpected message.*received 'SIP/2.0 1[0-9][0-9] " "$1" || true
}

# achieved_rate FILE CALLS: calls created per second while SIPp was still
# creating (first to last periodic row before OutgoingCall reached CALLS).
achieved_rate() {
	[ -s "$1" ] || { echo 0; return; }
	awk -F';' -v m="$2" 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "CurrentTime") t = i; if ($i == "OutgoingCall(C)") o = i }; next }
		{ split($t, a, "\t"); ts = a[3] + 0; n = $o + 0
		  if (!have) { t0 = ts; n0 = n; have = 1 }
		  if (n < m) { t1 = ts; n1 = n } else if (!done) { t1 = ts; n1 = n; done = 1 } }
		END { if (t1 > t0) printf "%.0f\n", (n1 - n0) / (t1 - t0); else print 0 }' "$1"
}

# ---- summary ---------------------------------------------------------------
SUMMARY=""
put() { echo "$SUT.$1=$2" >>"$SUMMARY"; }

# ---- phase 1: rate steps ---------------------------------------------------
phase_rate() {
	local run=$1 rate best=0 best_ach=0 stopped="none"
	for rate in $RATES; do
		local d="$OUT/run$run/$SUT/rate_$rate" calls=$((rate * STEP_SECS))
		mkdir -p "$d"
		log "run $run $SUT rate $rate calls/s: $calls calls of ${CALL_MS} ms"
		sut_start "$d" $((STEP_SECS + 120))
		uas_start "$d" $((STEP_SECS + 90))
		local rss0 c0 c1 k0 k1 x0 x1 t_start t_end
		rss0=$(sut_mem_kb); c0=$(sut_ticks); k0=$(sut_sticks); x0=$(sut_ctxsw); t_start=$(date +%s.%N)
		local peak=$rss0 r
		uac_start "$d" $((STEP_SECS * 3 + 30)) "$rate" "$calls" $((rate * 3 > 1000 ? rate * 3 : 1000)) "$CALL_MS"
		while alive "$UAC_PID"; do
			r=$(sut_mem_kb); [ "${r:-0}" -gt "$peak" ] && peak=$r
			sleep 1
		done
		local uac_rc=0; wait "$UAC_PID" 2>/dev/null || uac_rc=$?
		t_end=$(date +%s.%N)
		c1=$(sut_ticks); k1=$(sut_sticks); x1=$(sut_ctxsw); r=$(sut_mem_kb)
		sut_note "rate.$rate.end"
		local sut_alive=1; alive "$SUT_PID" || sut_alive=0
		local drops_sut drops_uas drops_uac
		drops_sut=$(udp_drops "$SUT_PORT"); drops_uas=$(udp_drops "$UAS_PORT"); drops_uac=$(udp_drops "$UAC_PORT")
		sut_stop "$d"
		uas_stop
		local ok failed created ach fpct fpct_sipp late cpus cpucall
		ok=$(sstat "$d/uac_stat.csv" 'SuccessfulCall(C)')
		late=$(late_1xx "$d/uac_err.log")
		failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
		created=$(sstat "$d/uac_stat.csv" 'OutgoingCall(C)')
		ach=$(achieved_rate "$d/uac_stat.csv" "$calls")
		# calls never created or never finished (SIPp killed) count as failed
		fpct_sipp=$(calc "%.3f" "($calls - $ok) * 100 / $calls")
		fpct=$(calc "%.3f" "($calls - $ok - $late) * 100 / $calls")
		cpus=$(calc "%.2f" "($c1 - $c0) / $TCK")
		cpucall=$(calc "%.1f" "$ok > 0 ? ($c1 - $c0) / $TCK * 1e6 / $ok : 0")
		put "rate.$rate.offered" "$rate"
		put "rate.$rate.achieved" "$ach"
		put "rate.$rate.calls" "$calls"
		put "rate.$rate.created" "$created"
		put "rate.$rate.successful" "$ok"
		put "rate.$rate.failed_sipp" "$failed"
		put "rate.$rate.failed_pct" "$fpct"
		put "rate.$rate.failed_pct_sipp" "$fpct_sipp"
		put "rate.$rate.late_1xx_aborts" "$late"
		put "rate.$rate.sut_cpu_s" "$cpus"
		put "rate.$rate.cpu_us_per_call" "$cpucall"
		# the kernel's part of it (stime): socket calls, wakeups, loopback
		put "rate.$rate.sys_us_per_call" "$(calc "%.1f" "$ok > 0 ? ($k1 - $k0) / $TCK * 1e6 / $ok : 0")"
		put "rate.$rate.ctxsw_per_call" "$(calc "%.1f" "$ok > 0 ? ($x1 - $x0) / $ok : 0")"
		put "rate.$rate.mem_peak_kb" "$peak"
		put "rate.$rate.mem_end_kb" "$r"
		put "rate.$rate.secs" "$(calc "%.1f" "$t_end - $t_start")"
		put "rate.$rate.uac_exit" "$uac_rc"
		put "rate.$rate.udp_drops_sut" "$drops_sut"
		put "rate.$rate.udp_drops_sipp" "$((drops_uas + drops_uac))"
		put "rate.$rate.sut_stop" "$(grep -q '^exited' "$d/stop.txt" && echo clean || echo hung)"
		[ "$SUT" = kamailio ] && put "rate.$rate.kamailio_oom_lines" "$(grep -ci 'no more \(shm\|pkg\)\|out of memory' "$d/kamailio.log" || true)"
		[ "$SUT" = sbcd ] && put "rate.$rate.cdr_not_caller_bye" "$(cat "$d"/cdr/*.csv 2>/dev/null | awk -F, 'NR > 1 && $10 != "end_reason" && $10 != "caller_bye"' | wc -l)"
		log "  achieved $ach/s, ok $ok/$calls, failed $fpct % (SIPp: $fpct_sipp %, $late late-1xx aborts), cpu ${cpus}s = ${cpucall} us/call, mem peak $peak kB, uac exit $uac_rc, udp drops $SUT $drops_sut sipp $((drops_uas + drops_uac)), $SUT $(cat "$d/stop.txt")"
		if [ "$sut_alive" -eq 0 ]; then stopped="sut_died_at_$rate"; log "  SUT DIED: $(tail -3 "$d/$SUT.log")"; break; fi
		if awk "BEGIN { exit !($fpct >= $FAIL_PCT) }"; then stopped="failures_at_$rate"; break; fi
		best=$rate; best_ach=$ach
		if awk "BEGIN { exit !($ach < $rate * $KEEPUP_PCT / 100) }"; then stopped="sipp_behind_at_$rate"; break; fi
	done
	put "rate.highest_ok_offered" "$best"
	put "rate.highest_ok_achieved" "$best_ach"
	put "rate.stop_reason" "$stopped"
}

# ---- phase 2: memory per established call ----------------------------------
phase_hold() {
	local run=$1 n
	for n in $HOLDS; do
		local d="$OUT/run$run/$SUT/hold_$n" ramp=$((n / HOLD_RATE + 1))
		mkdir -p "$d"
		log "run $run $SUT hold $n calls (ramp ${HOLD_RATE}/s)"
		sut_start "$d" $((ramp * 3 + SETTLE_SECS + 150))
		sleep 3
		local idle; idle=$(sut_mem_kb)
		sut_note "hold.$n.idle"
		uas_start "$d" $((ramp * 3 + SETTLE_SECS + 90))
		uac_start "$d" $((ramp * 3 + SETTLE_SECS + 60)) "$HOLD_RATE" "$n" "$n" 300000
		local t=0 cur=0 up=0 lim=$((ramp * 3 + 30))
		while [ $t -lt $lim ]; do
			sleep 1; t=$((t + 1))
			alive "$SUT_PID" || break
			alive "$UAC_PID" || break
			cur=$(sstat "$d/uac_stat.csv" 'OutgoingCall(C)')
			if [ "$cur" -ge "$n" ]; then up=$t; break; fi
		done
		sleep 5 # let the last 2xx/ACKs through
		local failed rss_up rss_set cur_calls
		failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
		cur_calls=$(sstat "$d/uac_stat.csv" 'CurrentCall')
		rss_up=$(sut_mem_kb)
		sut_note "hold.$n.up"
		echo "t_s mem_kb" >"$d/mem.txt"
		local s
		for s in $(seq "$SETTLE_SECS"); do
			echo "$s $(sut_mem_kb)" >>"$d/mem.txt"; sleep 1
		done
		rss_set=$(sut_mem_kb)
		sut_note "hold.$n.settled"
		failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
		cur_calls=$(sstat "$d/uac_stat.csv" 'CurrentCall')
		local sut_alive=1; alive "$SUT_PID" || sut_alive=0
		put "hold.$n.udp_drops_sut" "$(udp_drops "$SUT_PORT")"
		kill -TERM "$UAC_PID" 2>/dev/null || true; wait "$UAC_PID" 2>/dev/null || true
		uas_stop
		# calls are still up in sbcd: SIGTERM would BYE all of them towards
		# dead SIPps; stop it hard between phases
		sut_kill
		put "hold.$n.target" "$n"
		put "hold.$n.established" "$cur_calls"
		put "hold.$n.failed_sipp" "$failed"
		put "hold.$n.late_1xx_aborts" "$(late_1xx "$d/uac_err.log")"
		put "hold.$n.ramp_s" "$up"
		put "hold.$n.mem_idle_kb" "$idle"
		put "hold.$n.mem_up_kb" "$rss_up"
		put "hold.$n.mem_settled_kb" "$rss_set"
		put "hold.$n.bytes_per_call_up" "$(calc "%.0f" "$cur_calls > 0 ? ($rss_up - $idle) * 1024 / $cur_calls : 0")"
		put "hold.$n.bytes_per_call_settled" "$(calc "%.0f" "$cur_calls > 0 ? ($rss_set - $idle) * 1024 / $cur_calls : 0")"
		local pi ps
		pi=$(awk -F= -v k="$SUT.hold.$n.idle.pss_kb" '$1 == k { v = $2 } END { print v + 0 }' "$SUMMARY")
		ps=$(awk -F= -v k="$SUT.hold.$n.settled.pss_kb" '$1 == k { v = $2 } END { print v + 0 }' "$SUMMARY")
		put "hold.$n.pss_bytes_per_call_settled" "$(calc "%.0f" "$cur_calls > 0 ? ($ps - $pi) * 1024 / $cur_calls : 0")"
		put "hold.$n.sut_alive" "$sut_alive"
		log "  established $cur_calls/$n (failed $failed) in ${up}s; mem idle $idle, up $rss_up, after ${SETTLE_SECS}s $rss_set kB; pss idle $pi, settled $ps kB"
		[ "$sut_alive" -eq 1 ] || log "  SUT DIED: $(tail -3 "$d/$SUT.log")"
	done
}

# ---- phase 3: churn --------------------------------------------------------
phase_churn() {
	local run=$1
	local d="$OUT/run$run/$SUT/churn" calls=$((CHURN_RATE * CHURN_SECS))
	mkdir -p "$d"
	log "run $run $SUT churn ${CHURN_RATE}/s of ${CALL_MS}-ms calls for ${CHURN_SECS}s, then ${AFTER_SECS}s idle"
	sut_start "$d" $((CHURN_SECS * 2 + AFTER_SECS + 150))
	sleep 3
	local idle peak c0 c1 t=0 r p pss_idle pss_peak
	idle=$(sut_mem_kb); peak=$idle; c0=$(sut_ticks)
	pss_idle=$(sut_pss_kb); pss_peak=$pss_idle
	uas_start "$d" $((CHURN_SECS * 2 + AFTER_SECS + 60))
	uac_start "$d" $((CHURN_SECS * 2 + 30)) "$CHURN_RATE" "$calls" $((CHURN_RATE * 3)) "$CALL_MS"
	echo "t_s phase mem_kb pss_kb" >"$d/mem.txt"
	while alive "$UAC_PID"; do
		r=$(sut_mem_kb); p=$(sut_pss_kb); echo "$t load $r $p" >>"$d/mem.txt"
		[ "${r:-0}" -gt "$peak" ] && peak=$r
		[ "${p:-0}" -gt "$pss_peak" ] && pss_peak=$p
		sleep 1; t=$((t + 1))
	done
	local uac_rc=0; wait "$UAC_PID" 2>/dev/null || uac_rc=$?
	c1=$(sut_ticks)
	local rss_end; rss_end=$(sut_mem_kb)
	local s
	for s in $(seq "$AFTER_SECS"); do
		sleep 1; r=$(sut_mem_kb); p=$(sut_pss_kb); echo "$((t + s)) after $r $p" >>"$d/mem.txt"
		[ "${r:-0}" -gt "$peak" ] && peak=$r
		[ "${p:-0}" -gt "$pss_peak" ] && pss_peak=$p
	done
	local rss_after; rss_after=$(sut_mem_kb)
	local sut_alive=1; alive "$SUT_PID" || sut_alive=0
	local drops_sut; drops_sut=$(udp_drops "$SUT_PORT")
	sut_stop "$d"
	uas_stop
	local ok failed ach late
	ok=$(sstat "$d/uac_stat.csv" 'SuccessfulCall(C)')
	late=$(late_1xx "$d/uac_err.log")
	failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
	ach=$(achieved_rate "$d/uac_stat.csv" "$calls")
	put "churn.offered" "$CHURN_RATE"
	put "churn.achieved" "$ach"
	put "churn.calls" "$calls"
	put "churn.successful" "$ok"
	put "churn.failed_pct" "$(calc "%.3f" "($calls - $ok - $late) * 100 / $calls")"
	put "churn.failed_pct_sipp" "$(calc "%.3f" "($calls - $ok) * 100 / $calls")"
	put "churn.late_1xx_aborts" "$late"
	put "churn.cpu_us_per_call" "$(calc "%.1f" "$ok > 0 ? ($c1 - $c0) / $TCK * 1e6 / $ok : 0")"
	put "churn.mem_idle_kb" "$idle"
	put "churn.mem_peak_kb" "$peak"
	put "churn.mem_end_load_kb" "$rss_end"
	put "churn.mem_after_${AFTER_SECS}s_kb" "$rss_after"
	put "churn.growth_peak_mb" "$(calc "%.1f" "($peak - $idle) / 1024")"
	put "churn.pss_idle_kb" "$pss_idle"
	put "churn.pss_peak_kb" "$pss_peak"
	put "churn.pss_growth_peak_mb" "$(calc "%.1f" "($pss_peak - $pss_idle) / 1024")"
	put "churn.sut_alive" "$sut_alive"
	put "churn.udp_drops_sut" "$drops_sut"
	put "churn.sut_stop" "$(grep -q '^exited' "$d/stop.txt" && echo clean || echo hung)"
	log "  ok $ok/$calls (failed $failed, of which $late late-1xx aborts), achieved $ach/s; mem idle $idle, peak $peak, end $rss_end, +${AFTER_SECS}s $rss_after kB; pss idle $pss_idle, peak $pss_peak kB; $SUT $(cat "$d/stop.txt")"
}

# ---- helpers of the timing phases (teardown, refresh) -----------------------
# rtd_ms DIR SCENARIO NAME: every value (ms) SIPp measured for response time
# NAME, from DIR/SCENARIO_<pid>_rtt.csv (-trace_rtt -rtt_freq 1: lines
# "Date_ms;response_time_ms;rtd_no", rtd_no being the rtd's name)
rtd_ms() {
	local f
	for f in "$1/$2"_*_rtt.csv; do
		[ -f "$f" ] || continue
		awk -F';' -v n="$3" '$3 == n { print $2 }' "$f"
	done
}
# teardown_after_ms SE: when the side that does not refresh tears a session of
# SE seconds down, in ms (RFC 4028 §10, DESIGN.md §2): SE - min(32, SE/3) s
teardown_after_ms() { calc "%.0f" "$1 * 1000 - ($1 * 1000 / 3 < 32000 ? $1 * 1000 / 3 : 32000)"; }
# within_ms MS FILE: how many of FILE's numbers are within ±MS
within_ms() { awk -v m="$1" '$1 <= m && $1 >= -m { c++ } END { print c + 0 }' "$2"; }
# pct PART WHOLE: PART/WHOLE in %, 2 decimals ("-" when WHOLE is 0)
pct() { if [ "${2:-0}" -gt 0 ]; then calc "%.2f" "$1 * 100 / $2"; else echo "-"; fi; }
# cdr_lines DIR: sbcd's CDR lines (headers left out)
cdr_lines() { cat "$1"/cdr/*.csv 2>/dev/null | awk -F, '$10 != "end_reason"'; }

# ---- phase 4: dead-call teardown -------------------------------------------
phase_teardown() {
	local run=$1
	local d="$OUT/run$run/$SUT/teardown" n=$TEARDOWN_CALLS se=$TEARDOWN_SE
	local ramp=$(((TEARDOWN_CALLS + TEARDOWN_RATE - 1) / TEARDOWN_RATE)) exp_ms
	# sbcd is not the refresher towards the caller: BYE at SE - min(32, SE/3);
	# Kamailio's dialog timer (timeout from Session-Expires) at SE, in whole
	# seconds of its timer ticks
	if [ "$SUT" = sbcd ]; then exp_ms=$(teardown_after_ms "$se"); else exp_ms=$((se * 1000)); fi
	mkdir -p "$d"
	log "run $run $SUT teardown: $n dead calls at ${TEARDOWN_RATE}/s, SE $se: BYE expected $(calc "%.3f" "$exp_ms / 1000") s after the 200"
	# the last call is up after ~ramp s (3x when loaded) and gets its BYE
	# < SE s later; a caller gives up on its BYE SE + 30 s after the 200
	local lim=$((ramp * 3 + se + 60))
	sut_start "$d" $((lim + 90)) "$se"
	uas_start "$d" $((lim + 30)) uas_timer.xml -key se "$se" -trace_rtt -rtt_freq 1
	uac_start "$d" "$lim" "$TEARDOWN_RATE" "$n" "$n" 1000 uac_dead.xml -key se "$se" \
		-trace_rtt -rtt_freq 1 -recv_timeout $(((se + 30) * 1000))
	local uac_rc=0
	wait "$UAC_PID" 2>/dev/null || uac_rc=$?
	sleep 3 # the callee's timewait after the last BYE, and its last stat row
	local sut_alive=1; alive "$SUT_PID" || sut_alive=0
	sut_stop "$d"
	uas_stop
	rtd_ms "$d" uac_dead teardown >"$d/teardown_ms.txt"
	awk -v e="$exp_ms" '{ print $1 - e }' "$d/teardown_ms.txt" >"$d/teardown_dev_ms.txt"
	local est down within cnt mn p50 p99 mx mp50 failed callee
	est=$(rtd_ms "$d" uac_dead setup | wc -l)
	down=$(wc -l <"$d/teardown_ms.txt")
	within=$(within_ms 100 "$d/teardown_dev_ms.txt")
	read -r cnt mn p50 p99 mx < <(percentiles 50 99 <"$d/teardown_dev_ms.txt")
	read -r cnt _ mp50 _ < <(percentiles 50 <"$d/teardown_ms.txt")
	[ "$cnt" -gt 0 ] && mp50=$(calc "%.3f" "$mp50 / 1000")
	failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
	callee=$(sstat "$d/uas_stat.csv" 'SuccessfulCall(C)')
	put "teardown.calls" "$n"
	put "teardown.rate" "$TEARDOWN_RATE"
	put "teardown.se" "$se"
	put "teardown.expected_s" "$(calc "%.3f" "$exp_ms / 1000")"
	put "teardown.established" "$est"
	put "teardown.torn_down" "$down"
	put "teardown.no_bye" "$((est - down))"
	put "teardown.failed_sipp" "$failed"
	put "teardown.callee_byes" "$callee"
	put "teardown.measured_p50_s" "$mp50"
	put "teardown.min_ms" "$mn"
	put "teardown.p50_ms" "$p50"
	put "teardown.p99_ms" "$p99"
	put "teardown.max_ms" "$mx"
	put "teardown.within_100ms" "$within"
	put "teardown.within_100ms_pct" "$(pct "$within" "$est")"
	put "teardown.uac_exit" "$uac_rc"
	put "teardown.sut_alive" "$sut_alive"
	put "teardown.sut_stop" "$(grep -q '^exited' "$d/stop.txt" && echo clean || echo hung)"
	local cdr=""
	if [ "$SUT" = sbcd ]; then
		local st other cd50
		st=$(cdr_lines "$d" | awk -F, '$10 == "session_timeout"' | wc -l)
		other=$(cdr_lines "$d" | awk -F, '$10 != "session_timeout"' | wc -l)
		# duration: end_time - answer_time, sbcd's own view of the teardown
		read -r _ _ cd50 _ < <(cdr_lines "$d" | awk -F, '$10 == "session_timeout" { print $9 }' | percentiles 50)
		put "teardown.cdr_session_timeout" "$st"
		put "teardown.cdr_other_reason" "$other"
		put "teardown.cdr_duration_p50_s" "$cd50"
		cdr="; CDR: $st session_timeout, $other other (duration p50 ${cd50} s)"
	fi
	log "  established $est/$n, torn down $down (no BYE $((est - down)), SIPp failed $failed, callee BYEs $callee); measured p50 ${mp50} s, minus expected: min $mn p50 $p50 p99 $p99 max $mx ms, $within within 100 ms$cdr; $SUT $(cat "$d/stop.txt")"
	[ "$sut_alive" -eq 1 ] || log "  SUT DIED: $(tail -3 "$d/$SUT.log")"
}

# ---- phase 5: refresh punctuality (sbcd) -----------------------------------
phase_refresh() {
	local run=$1
	if [ "$SUT" != sbcd ]; then
		log "run $run $SUT refresh: skipped (a proxy does not refresh sessions; sbcd only)"
		return 0
	fi
	local d="$OUT/run$run/$SUT/refresh" n=$REFRESH_CALLS se=$REFRESH_SE
	local ramp=$(((REFRESH_CALLS + HOLD_RATE - 1) / HOLD_RATE))
	# sbcd refreshes every ttl/update_segment (default 2) on each leg
	local due_ms=$((se * 500)) hold_ms=$(((ramp + REFRESH_HOLD_SECS) * 1000))
	mkdir -p "$d"
	log "run $run $SUT refresh: $n calls ramped at ${HOLD_RATE}/s, SE $se (refresh due every $(calc "%.1f" "$due_ms / 1000") s per leg), each held $((hold_ms / 1000)) s"
	# the last call starts after ~ramp s (3x when loaded), lasts ramp +
	# REFRESH_HOLD_SECS s, then BYE and SIPp's 4-s timewait
	local lim=$((ramp * 4 + REFRESH_HOLD_SECS + 60))
	sut_start "$d" $((lim + 120)) "$se"
	sleep 1
	local idle; idle=$(sut_mem_kb)
	uas_start "$d" $((lim + 30)) uas_timer.xml -key se "$se" -trace_rtt -rtt_freq 1
	uac_start "$d" "$lim" "$HOLD_RATE" "$n" "$n" "$hold_ms" uac_refresh.xml -key se "$se" -trace_rtt -rtt_freq 1
	local peak=$idle r
	while alive "$UAC_PID"; do
		r=$(sut_mem_kb); [ "${r:-0}" -gt "$peak" ] && peak=$r
		sleep 1
	done
	local uac_rc=0
	wait "$UAC_PID" 2>/dev/null || uac_rc=$?
	sleep 3 # the callee's timewait after the last BYE, and its last stat row
	local sut_alive=1; alive "$SUT_PID" || sut_alive=0
	local drops; drops=$(udp_drops "$SUT_PORT")
	# SIGTERM: sbcd logs its own refresh figures as it stops
	sut_stop "$d"
	uas_stop
	rtd_ms "$d" uac_refresh refresh | awk -v e="$due_ms" '{ print $1 - e }' >"$d/late_a_ms.txt"
	rtd_ms "$d" uas_timer refresh | awk -v e="$due_ms" '{ print $1 - e }' >"$d/late_b_ms.txt"
	cat "$d/late_a_ms.txt" "$d/late_b_ms.txt" >"$d/late_ms.txt"
	local est ok failed leg f cnt mn p50 p99 mx within summ=""
	est=$(rtd_ms "$d" uac_refresh setup | wc -l)
	ok=$(sstat "$d/uac_stat.csv" 'SuccessfulCall(C)')
	failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
	put "refresh.calls" "$n"
	put "refresh.rate" "$HOLD_RATE"
	put "refresh.se" "$se"
	put "refresh.due_s" "$(calc "%.1f" "$due_ms / 1000")"
	put "refresh.hold_s" "$((hold_ms / 1000))"
	put "refresh.established" "$est"
	put "refresh.successful" "$ok"
	put "refresh.failed_sipp" "$failed"
	# per leg (a: caller, b: callee) and both: lateness = interval - due
	for leg in a b both; do
		case $leg in a) f="$d/late_a_ms.txt" ;; b) f="$d/late_b_ms.txt" ;; *) f="$d/late_ms.txt" ;; esac
		read -r cnt mn p50 p99 mx < <(percentiles 50 99 <"$f")
		within=$(within_ms 20 "$f")
		local k="refresh.${leg}_"
		[ "$leg" = both ] && k="refresh."
		put "${k}refreshes" "$cnt"
		[ "$leg" = both ] || put "${k}refreshes_per_call" "$(if [ "$est" -gt 0 ]; then calc "%.2f" "$cnt / $est"; else echo -; fi)"
		put "${k}late_min_ms" "$mn"
		put "${k}late_p50_ms" "$p50"
		put "${k}late_p99_ms" "$p99"
		put "${k}late_max_ms" "$mx"
		put "${k}within_20ms_pct" "$(pct "$within" "$cnt")"
		summ="$summ; $leg: $cnt refreshes, late p50 $p50 p99 $p99 max $mx ms"
	done
	# sbcd's refreshes sent per answered call and leg, from its CDRs
	local cdr_calls a_min a_sum b_min b_sum not_bye
	read -r cdr_calls a_min a_sum b_min b_sum < <(cdr_lines "$d" | awk -F, '$15 == "timer" || $20 == "timer" {
		c++; a += $16; b += $21
		if (c == 1 || $16 < amin) amin = $16; if (c == 1 || $21 < bmin) bmin = $21 }
		END { if (c) print c, amin, a, bmin, b; else print "0 - 0 - 0" }')
	not_bye=$(cdr_lines "$d" | awk -F, '$10 != "caller_bye"' | wc -l)
	put "refresh.cdr_calls" "$cdr_calls"
	put "refresh.cdr_a_refreshes_sent" "$a_sum"
	put "refresh.cdr_a_min_per_call" "$a_min"
	put "refresh.cdr_b_refreshes_sent" "$b_sum"
	put "refresh.cdr_b_min_per_call" "$b_min"
	put "refresh.cdr_not_caller_bye" "$not_bye"
	# sbcd's own figures, logged at SIGTERM (log/slog text):
	#   msg="session refreshes" sent=N late_p50_ms=X late_p99_ms=Y late_max_ms=Z
	local line
	line=$(grep 'msg="session refreshes"' "$d/sbcd.log" | tail -1 || true)
	local key v
	for key in sent late_p50_ms late_p99_ms late_max_ms; do
		v=$(printf '%s\n' "$line" | tr ' ' '\n' | awk -F= -v k="$key" '$1 == k { v = $2; gsub(/"/, "", v) } END { print (v == "" ? "-" : v) }')
		case $key in sent) put "refresh.internal_sent" "$v" ;; *) put "refresh.internal_${key#late_}" "$v" ;; esac
	done
	put "refresh.sut_mem_idle_kb" "$idle"
	put "refresh.sut_mem_peak_kb" "$peak"
	put "refresh.udp_drops_sut" "$drops"
	put "refresh.uac_exit" "$uac_rc"
	put "refresh.sut_alive" "$sut_alive"
	put "refresh.sut_stop" "$(grep -q '^exited' "$d/stop.txt" && echo clean || echo hung)"
	log "  established $est/$n, successful $ok, failed $failed$summ; CDR refreshes sent per call a >= $a_min, b >= $b_min; sbcd's own: ${line:-no \"session refreshes\" line}; $SUT $(cat "$d/stop.txt")"
	[ "$sut_alive" -eq 1 ] || log "  SUT DIED: $(tail -3 "$d/$SUT.log")"
}

# ---- runs, medians, table --------------------------------------------------
# REPORT_ONLY=1 OUT=DIR: no runs, the report again from DIR's run*/summary.txt
if [ "${REPORT_ONLY:-0}" = 1 ]; then
	ls "$OUT"/run*/summary.txt >/dev/null 2>&1 || die "REPORT_ONLY: no $OUT/run*/summary.txt"
	RUNS=$(find "$OUT" -maxdepth 1 -name 'run*' -type d | wc -l)
else
	{
		echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
		echo "cores=$(nproc)"
		echo "ram=$(free -g | awk '/^Mem:/{print $2" GiB"}')"
		echo "kernel=$(uname -r)"
		echo "loadavg_at_start=$(cut -d' ' -f1-3 /proc/loadavg)"
		echo "go=$(/usr/local/go/bin/go version 2>/dev/null | awk '{print $3}')"
		echo "sipp=$("$SIPP" -v 2>&1 | grep -o 'v[0-9.]*[^ ]*' | head -1)"
		echo "suts=$SUTS"
		case " $SUTS " in *" sbcd "*) echo "sbcd=$("$SBCD" version 2>/dev/null || true)" ;; esac
		case " $SUTS " in *" kamailio "*)
			echo "kamailio=$(kamailio -v 2>/dev/null | sed -n 's/^version: //p' | head -1)"
			echo "kamailio_opts=-m $KAM_SHM_MB -M $KAM_PKG_MB -n $KAM_CHILDREN -f bench/kamailio/load.cfg"
			;;
		esac
		echo "mem=sbcd: VmRSS; kamailio: shared memory real_used (kamcmd core.shmmem); pss: PSS summed over the SUT's processes"
	} >"$OUT/machine.txt"

	log "load bench: SUT=$SUT ($SUTS) phases '$PHASES' runs $RUNS; out $OUT"
	for run in $(seq "$RUNS"); do
		mkdir -p "$OUT/run$run"
		SUMMARY="$OUT/run$run/summary.txt"
		: >"$SUMMARY"
		for SUT in $SUTS; do
			mkdir -p "$OUT/run$run/$SUT"
			for ph in $PHASES; do "phase_$ph" "$run"; done
		done
		echo "loadavg_after_run$run=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
	done
fi

# median per key over the runs that have it (numeric keys); first value otherwise
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
g() { awk -F= -v k="$1" '$1 == k { print substr($0, length(k) + 2) }' "$S"; }
mb() { local v; v=$(g "$1"); [ -n "$v" ] && calc "%.1f" "$v / 1024" || echo "-"; }
# gnum KEY: the value when it is a number, else nothing (for ratio)
gnum() { g "$1" | awk '/^-?[0-9.]+$/'; }
# ratio NUM DEN: NUM/DEN with 2 decimals, "-" when either is missing or DEN is 0
ratio() { if [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN { exit !($2 != 0) }"; then calc "%.2f" "$1 / $2"; else echo "-"; fi; }
# rate_ok SUT RATE: the step ran and had < FAIL_PCT % failed calls
rate_ok() { local f; f=$(g "$1.rate.$2.failed_pct"); [ -n "$f" ] && awk "BEGIN { exit !($f < $FAIL_PCT) }"; }
mem_label() { [ "$1" = kamailio ] && echo "shm" || echo "rss"; }
report_sut() {
	local s=$1 m; m=$(mem_label "$s")
	if grep -q "^$s\.rate\." "$S"; then
		echo "== $s: call rate (${CALL_MS}-ms calls, ${STEP_SECS} s per step; mem = $m) =="
		printf '%-8s %-9s %-9s %-10s %-9s %-10s %-11s %-11s %-11s %-8s\n' offered achieved failed% sipp_fail% late_1xx sut_cpu_s cpu_us/call sys_us/call ctxsw/call "${m}_MB"
		for rate in $RATES; do
			[ -n "$(g "$s.rate.$rate.offered")" ] || continue
			printf '%-8s %-9s %-9s %-10s %-9s %-10s %-11s %-11s %-11s %-8s\n' "$rate" "$(g "$s.rate.$rate.achieved")" "$(g "$s.rate.$rate.failed_pct")" \
				"$(g "$s.rate.$rate.failed_pct_sipp")" "$(g "$s.rate.$rate.late_1xx_aborts")" \
				"$(g "$s.rate.$rate.sut_cpu_s")" "$(g "$s.rate.$rate.cpu_us_per_call")" "$(g "$s.rate.$rate.sys_us_per_call")" \
				"$(g "$s.rate.$rate.ctxsw_per_call")" "$(mb "$s.rate.$rate.mem_peak_kb")"
		done
		echo "(sys_us/call = the kernel's part of cpu_us/call: stime; ctxsw/call = context switches of all its threads per call)"
		echo "(failed% = calls not completed, less late_1xx: calls SIPp aborted on a 1xx relayed after the 2xx; sipp_fail% counts them)"
		echo "highest offered rate with < ${FAIL_PCT} % failed: $(g "$s.rate.highest_ok_offered") (achieved $(g "$s.rate.highest_ok_achieved")); stop: $(g "$s.rate.stop_reason")"
		echo
	fi
	if grep -q "^$s\.hold\." "$S"; then
		echo "== $s: memory per established call (mem = $m; pss = all its processes) =="
		printf '%-8s %-12s %-9s %-9s %-11s %-10s %-14s %-14s\n' target established idle_MB up_MB settled_MB B/call_up B/call_settled pss_B/call_set
		for n in $HOLDS; do
			[ -n "$(g "$s.hold.$n.target")" ] || continue
			printf '%-8s %-12s %-9s %-9s %-11s %-10s %-14s %-14s\n' "$n" "$(g "$s.hold.$n.established")" \
				"$(mb "$s.hold.$n.mem_idle_kb")" "$(mb "$s.hold.$n.mem_up_kb")" "$(mb "$s.hold.$n.mem_settled_kb")" \
				"$(g "$s.hold.$n.bytes_per_call_up")" "$(g "$s.hold.$n.bytes_per_call_settled")" "$(g "$s.hold.$n.pss_bytes_per_call_settled")"
		done
		for n in $HOLDS; do
			[ -n "$(g "$s.hold.$n.target")" ] || continue
			if [ "$s" = kamailio ]; then
				echo "  $n: dialogs active (dlg.stats_active) when up $(g "$s.hold.$n.up.dlg_active"), settled $(g "$s.hold.$n.settled.dlg_active");" \
					"shm used/real_used settled $(mb "$s.hold.$n.settled.shm_used_kb")/$(mb "$s.hold.$n.settled.shm_real_used_kb") MB;" \
					"failed $(g "$s.hold.$n.failed_sipp") (late-1xx aborts $(g "$s.hold.$n.late_1xx_aborts"))"
			else
				echo "  $n: failed $(g "$s.hold.$n.failed_sipp") (late-1xx aborts $(g "$s.hold.$n.late_1xx_aborts"))"
			fi
		done
		echo
	fi
	if grep -q "^$s\.churn\." "$S"; then
		echo "== $s: churn (${CHURN_RATE}/s of ${CALL_MS}-ms calls for ${CHURN_SECS} s; mem = $m) =="
		printf '%-9s %-8s %-10s %-8s %-8s %-8s %-9s %-12s %-11s %-11s %-11s\n' achieved failed% sipp_fail% late_1xx idle_MB peak_MB end_MB "+${AFTER_SECS}s_MB" growth_MB pss_grow_MB cpu_us/call
		printf '%-9s %-8s %-10s %-8s %-8s %-8s %-9s %-12s %-11s %-11s %-11s\n' "$(g "$s.churn.achieved")" "$(g "$s.churn.failed_pct")" \
			"$(g "$s.churn.failed_pct_sipp")" "$(g "$s.churn.late_1xx_aborts")" \
			"$(mb "$s.churn.mem_idle_kb")" "$(mb "$s.churn.mem_peak_kb")" "$(mb "$s.churn.mem_end_load_kb")" \
			"$(mb "$s.churn.mem_after_${AFTER_SECS}s_kb")" "$(g "$s.churn.growth_peak_mb")" "$(g "$s.churn.pss_growth_peak_mb")" \
			"$(g "$s.churn.cpu_us_per_call")"
		echo
	fi
	if grep -q "^$s\.teardown\." "$S"; then
		echo "== $s: dead-call teardown ($(g "$s.teardown.calls") calls at $(g "$s.teardown.rate")/s, SE $(g "$s.teardown.se"), the caller never refreshes; BYE expected $(g "$s.teardown.expected_s") s after the 200) =="
		printf '%-12s %-10s %-7s %-11s %-8s %-8s %-8s %-8s %-13s\n' established torn_down no_bye measured_s min_ms p50_ms p99_ms max_ms within_100ms%
		printf '%-12s %-10s %-7s %-11s %-8s %-8s %-8s %-8s %-13s\n' "$(g "$s.teardown.established")" "$(g "$s.teardown.torn_down")" \
			"$(g "$s.teardown.no_bye")" "$(g "$s.teardown.measured_p50_s")" "$(g "$s.teardown.min_ms")" "$(g "$s.teardown.p50_ms")" \
			"$(g "$s.teardown.p99_ms")" "$(g "$s.teardown.max_ms")" "$(g "$s.teardown.within_100ms_pct")"
		echo "(measured: the caller's 200 received -> the SUT's BYE received, SIPp rtd, 1 ms resolution, p50; *_ms: measured - expected; within_100ms% of the calls established)"
		echo "  callee BYEs $(g "$s.teardown.callee_byes"), SIPp failed calls $(g "$s.teardown.failed_sipp")$([ "$s" = sbcd ] && echo "; CDR end reasons: session_timeout $(g "$s.teardown.cdr_session_timeout"), other $(g "$s.teardown.cdr_other_reason"); CDR duration p50 $(g "$s.teardown.cdr_duration_p50_s") s")"
		echo
	fi
	if grep -q "^$s\.refresh\." "$S"; then
		echo "== $s: refresh punctuality ($(g "$s.refresh.calls") calls ramped at $(g "$s.refresh.rate")/s, SE $(g "$s.refresh.se"), due every $(g "$s.refresh.due_s") s per leg, held $(g "$s.refresh.hold_s") s) =="
		printf '%-10s %-10s %-9s %-12s %-12s %-12s %-12s %-12s\n' leg refreshes per_call late_min_ms late_p50_ms late_p99_ms late_max_ms within_20ms%
		local leg k
		for leg in a b both; do
			k="$s.refresh.${leg}_"
			[ "$leg" = both ] && k="$s.refresh."
			printf '%-10s %-10s %-9s %-12s %-12s %-12s %-12s %-12s\n' "$(case $leg in a) echo caller ;; b) echo callee ;; *) echo both ;; esac)" \
				"$(g "${k}refreshes")" "$(g "${k}refreshes_per_call")" "$(g "${k}late_min_ms")" "$(g "${k}late_p50_ms")" \
				"$(g "${k}late_p99_ms")" "$(g "${k}late_max_ms")" "$(g "${k}within_20ms_pct")"
		done
		echo "(late = interval - due, ms, SIPp rtd at 1 ms resolution: 200 of the INVITE, then 200 of each refresh, to the next refresh received)"
		echo "  $s's own (log at SIGTERM): sent $(g "$s.refresh.internal_sent"), late p50 $(g "$s.refresh.internal_p50_ms"), p99 $(g "$s.refresh.internal_p99_ms"), max $(g "$s.refresh.internal_max_ms") ms"
		echo "  calls established $(g "$s.refresh.established"), successful $(g "$s.refresh.successful"), SIPp failed $(g "$s.refresh.failed_sipp");" \
			"CDR: $(g "$s.refresh.cdr_calls") calls, refreshes sent caller leg $(g "$s.refresh.cdr_a_refreshes_sent") (>= $(g "$s.refresh.cdr_a_min_per_call") per call)," \
			"callee leg $(g "$s.refresh.cdr_b_refreshes_sent") (>= $(g "$s.refresh.cdr_b_min_per_call") per call), not ended by the caller's BYE $(g "$s.refresh.cdr_not_caller_bye")"
		echo
	fi
}
# the side-by-side table: sbcd / kamailio
report_ratios() {
	local k=kamailio b=sbcd rate common="" ref=""
	echo "== sbcd / kamailio (medians of $RUNS run(s); DESIGN.md §10 targets) =="
	printf '%-44s %-12s %-12s %-8s %s\n' measure kamailio sbcd ratio target
	if grep -q '^sbcd\.rate\.' "$S" && grep -q '^kamailio\.rate\.' "$S"; then
		for rate in $RATES; do
			if ! rate_ok $k "$rate" || ! rate_ok $b "$rate"; then continue; fi
			common=$rate
			[ "$rate" = "$REF_RATE" ] && ref=$rate
			printf '%-44s %-12s %-12s %-8s %s\n' "CPU us/call at $rate/s" "$(g "$k.rate.$rate.cpu_us_per_call")" \
				"$(g "$b.rate.$rate.cpu_us_per_call")" "$(ratio "$(g "$b.rate.$rate.cpu_us_per_call")" "$(g "$k.rate.$rate.cpu_us_per_call")")" \
				"$([ "$rate" = "${ref:-x}" ] && echo '<= 0.5 (headline)' || echo '<= 0.5')"
			printf '%-44s %-12s %-12s %-8s %s\n' "  of which kernel (stime) at $rate/s" "$(g "$k.rate.$rate.sys_us_per_call")" \
				"$(g "$b.rate.$rate.sys_us_per_call")" "$(ratio "$(g "$b.rate.$rate.sys_us_per_call")" "$(g "$k.rate.$rate.sys_us_per_call")")" ""
		done
		[ -n "$common" ] || echo "CPU per call: no rate with < ${FAIL_PCT} % failed calls for both"
		[ -n "$ref" ] || [ -z "$common" ] || echo "(REF_RATE $REF_RATE not passed by both: compare at $common/s, the highest both passed)"
		local hk hb top=""
		hk=$(g "$k.rate.highest_ok_offered"); hb=$(g "$b.rate.highest_ok_offered")
		for rate in $RATES; do top=$rate; done
		printf '%-44s %-12s %-12s %-8s %s\n' "highest rate, < ${FAIL_PCT} % failed (calls/s)" "$hk" "$hb" "$(ratio "$hb" "$hk")" \
			">= 1$([ "$hk" = "$top" ] || [ "$hb" = "$top" ] && echo " (ladder top $top reached: a floor)")"
	fi
	if grep -q '^sbcd\.churn\.' "$S" && grep -q '^kamailio\.churn\.' "$S"; then
		printf '%-44s %-12s %-12s %-8s %s\n' "churn growth MB (sbcd rss / kamailio shm)" "$(g "$k.churn.growth_peak_mb")" \
			"$(g "$b.churn.growth_peak_mb")" "$(ratio "$(g "$b.churn.growth_peak_mb")" "$(g "$k.churn.growth_peak_mb")")" \
			"<= 1 and sbcd < 128 MB"
		printf '%-44s %-12s %-12s %-8s %s\n' "churn growth MB (pss, all processes)" "$(g "$k.churn.pss_growth_peak_mb")" \
			"$(g "$b.churn.pss_growth_peak_mb")" "$(ratio "$(g "$b.churn.pss_growth_peak_mb")" "$(g "$k.churn.pss_growth_peak_mb")")" "(for reference)"
		printf '%-44s %-12s %-12s %-8s %s\n' "churn CPU us/call at ${CHURN_RATE}/s" "$(g "$k.churn.cpu_us_per_call")" \
			"$(g "$b.churn.cpu_us_per_call")" "$(ratio "$(g "$b.churn.cpu_us_per_call")" "$(g "$k.churn.cpu_us_per_call")")" "<= 0.5"
	fi
	if grep -q '^sbcd\.hold\.' "$S" && grep -q '^kamailio\.hold\.' "$S"; then
		local n
		for n in $HOLDS; do
			if [ -z "$(g "$k.hold.$n.target")" ] || [ -z "$(g "$b.hold.$n.target")" ]; then continue; fi
			printf '%-44s %-12s %-12s %-8s %s\n' "B/established call at $n (settled)" "$(g "$k.hold.$n.bytes_per_call_settled")" \
				"$(g "$b.hold.$n.bytes_per_call_settled")" \
				"$(ratio "$(g "$b.hold.$n.bytes_per_call_settled")" "$(g "$k.hold.$n.bytes_per_call_settled")")" \
				"$([ "$n" = 50000 ] && echo 'sbcd <= 4096 B' || echo '-')"
			printf '%-44s %-12s %-12s %-8s %s\n' "B/established call at $n (pss, settled)" "$(g "$k.hold.$n.pss_bytes_per_call_settled")" \
				"$(g "$b.hold.$n.pss_bytes_per_call_settled")" \
				"$(ratio "$(g "$b.hold.$n.pss_bytes_per_call_settled")" "$(g "$k.hold.$n.pss_bytes_per_call_settled")")" "(for reference)"
		done
	fi
	if grep -q '^sbcd\.teardown\.' "$S" && grep -q '^kamailio\.teardown\.' "$S"; then
		printf '%-44s %-12s %-12s %-8s %s\n' "dead-call teardown s after the 200 (p50)" "$(g "$k.teardown.measured_p50_s")" \
			"$(g "$b.teardown.measured_p50_s")" "$(ratio "$(gnum "$b.teardown.measured_p50_s")" "$(gnum "$k.teardown.measured_p50_s")")" \
			"sbcd SE - min(32,SE/3) = $(g "$b.teardown.expected_s") s ± 100 ms; kamailio SE"
		printf '%-44s %-12s %-12s %-8s %s\n' "teardown - expected, p99 ms" "$(g "$k.teardown.p99_ms")" "$(g "$b.teardown.p99_ms")" "-" \
			"sbcd within ±100 ms; kamailio 1 s resolution"
		printf '%-44s %-12s %-12s %-8s %s\n' "teardown within 100 ms of expected, %" "$(g "$k.teardown.within_100ms_pct")" \
			"$(g "$b.teardown.within_100ms_pct")" "-" "sbcd 100"
	fi
	if grep -q '^sbcd\.refresh\.' "$S"; then
		printf '%-44s %-12s %-12s %-8s %s\n' "refresh lateness p99 ms (at $(g "$b.refresh.calls") calls)" "-" "$(g "$b.refresh.late_p99_ms")" "-" \
			"<= 20 (kamailio does not refresh)"
		printf '%-44s %-12s %-12s %-8s %s\n' "refresh lateness p99 ms, sbcd's own" "-" "$(g "$b.refresh.internal_p99_ms")" "-" "<= 20"
	fi
	echo "(memory: sbcd VmRSS growth, kamailio shared-memory real_used growth (kamcmd core.shmmem); pss rows: PSS over all processes)"
}
{
	echo "== machine =="
	cat "$OUT/machine.txt"
	echo
	echo "== summary (key=value; medians of $RUNS run(s)) =="
	cat "$S"
	echo
	for s in $SUTS; do report_sut "$s"; done
	case "$SUTS" in *kamailio*sbcd*) report_ratios; echo ;; esac
	echo "raw logs: $OUT"
} | tee "$OUT/report.txt"
