#!/usr/bin/env bash
# bench/load.sh: SIPp load through sbcd on loopback (issue 3, DESIGN.md §10).
#
# Usage (from the repository root; `make bench-load` builds bin/sbcd first):
#   bash bench/load.sh
#   RUNS=3 bash bench/load.sh                 # medians of 3 runs (~13 min per run)
#   PHASES="rate" RATES="500 1000" STEP_SECS=5 bash bench/load.sh   # quick pass
#
# SIPp caller (bench/sipp/uac.xml) -> system under test -> SIPp callee
# (bench/sipp/uas.xml), all on 127.0.0.1, session timers on both legs
# (Session-Expires 600), CDRs to a directory on disk. Phases:
#   rate   step the call rate (RATES, STEP_SECS s each, 1-s calls); stop at the
#          first step with >= FAIL_PCT % failed calls or where SIPp reaches
#          < KEEPUP_PCT % of the offered rate. Per step: achieved rate,
#          failed %, SUT CPU seconds (/proc/PID/stat utime+stime) and
#          CPU us/call, SUT RSS.
#   hold   for each N in HOLDS: fresh SUT, idle RSS, ramp N long calls
#          (-d 300000) at HOLD_RATE calls/s, RSS when N are up and again after
#          SETTLE_SECS s (past sipgo's 32 s transaction retention):
#          (RSS - idle) / N bytes per call.
#   churn  CHURN_RATE calls/s of 1-s calls for CHURN_SECS s; RSS every second
#          during the load and AFTER_SECS s after it.
# Output: key=value lines (summary.txt, medians over RUNS when RUNS > 1), a
# human table, and raw logs under OUT (a temp dir on disk, printed at the end).
#
# Knobs (environment): SBCD, SIPP, RUNS, PHASES, RATES, STEP_SECS, CALL_MS,
# FAIL_PCT, KEEPUP_PCT, HOLDS, HOLD_RATE, SETTLE_SECS, CHURN_RATE, CHURN_SECS,
# AFTER_SECS, BASE_PORT, OUT.
# Extending to another system under test (issue 6: Kamailio side by side):
# add sut_start_<name>/sut_mem_<name> below and run with SUT=<name>; the
# phases only use sut_start, SUT_PID, sut_mem_kb and sut_stop.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCEN="$ROOT/bench/sipp"
SUT=${SUT:-sbcd}
SBCD=${SBCD:-$ROOT/bin/sbcd}
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
BASE_PORT=${BASE_PORT:-25060}
SUT_PORT=$BASE_PORT
UAC_PORT=$((BASE_PORT + 1))
UAS_PORT=$((BASE_PORT + 2))
MAX_CALLS=${MAX_CALLS:-60000}
OUT=${OUT:-$(mktemp -d /var/tmp/sbcd-bench-load.XXXXXX)}
SIPP_COMMON=(-i 127.0.0.1 -buff_size 4194304 -max_socket 16384 -nostdin -trace_err -trace_stat -fd 1)
TCK=$(getconf CLK_TCK)

mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true # -t u1: one UDP socket per SIPp

# ---- process bookkeeping: everything started is killed on exit ----------
PIDS=()
SUT_PID=""
SUT_TPID=""
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 1
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/load.log" >&2; }
die() { log "FATAL: $*"; exit 1; }

command -v "$SIPP" >/dev/null || die "sipp not found (Debian package sip-tester)"
[ -x "$SBCD" ] || die "$SBCD not built (make build)"
for f in uac.xml uas.xml; do [ -f "$SCEN/$f" ] || die "missing $SCEN/$f"; done

# ---- /proc readings ------------------------------------------------------
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# udp_drops PORT: datagrams the kernel dropped on the UDP socket bound to
# 127.0.0.1:PORT (receive buffer full), from /proc/net/udp's drops column
udp_drops() {
	awk -v p="$(printf '%04X' "$1")" '$2 == "0100007F:" p { d += $NF } END { print d + 0 }' /proc/net/udp
}

# ---- system under test ---------------------------------------------------
# sut_start DIR: starts the SUT (bounded by LIMIT seconds), sets SUT_PID.
sut_start() { "sut_start_$SUT" "$@"; }
sut_mem_kb() { "sut_mem_$SUT"; }

sut_start_sbcd() {
	local dir=$1 limit=$2
	mkdir -p "$dir/cdr"
	cat >"$dir/sbcd.toml" <<EOF
[system]
data_dir = "$dir"

[sip]
listen = ["udp:127.0.0.1:$SUT_PORT"]
upstream = "sip:127.0.0.1:$UAS_PORT"
max_calls = $MAX_CALLS

[session_timer]
ttl = 600
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
	PIDS+=("$SUT_PID")
	for i in $(seq 50); do
		alive "$SUT_PID" || die "sbcd exited at start: $(tail -5 "$dir/sbcd.log")"
		if ss -Hlun "sport = :$SUT_PORT" | grep -q .; then return 0; fi
		sleep 0.1
	done
	die "sbcd not listening on 127.0.0.1:$SUT_PORT after 5 s"
}
sut_mem_sbcd() { rss_kb "$SUT_PID"; }

# sut_stop DIR: SIGTERM, up to 45 s, then SIGQUIT and SIGKILL (noted in DIR/stop.txt).
sut_stop() {
	local dir=$1 i
	alive "$SUT_PID" || { echo "sut already gone" >"$dir/stop.txt"; return 0; }
	kill -TERM "$SUT_PID" 2>/dev/null || true
	# sbcd's Shutdown BYEs what is up and waits up to 40 s (Timer F) for its
	# pending transactions; 45 s tells that wait from a hang
	for i in $(seq 450); do
		alive "$SUT_PID" || { echo "exited $((i / 10)).$((i % 10)) s after SIGTERM" >"$dir/stop.txt"; wait "$SUT_TPID" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	# Go prints every goroutine's stack on SIGQUIT: the evidence of the hang
	echo "did not exit within 45 s of SIGTERM: SIGQUIT (goroutine dump in sbcd.log), then SIGKILL" >"$dir/stop.txt"
	kill -QUIT "$SUT_PID" 2>/dev/null || true
	sleep 2
	kill -KILL "$SUT_PID" 2>/dev/null || true
	wait "$SUT_TPID" 2>/dev/null || true
}

# ---- SIPp ------------------------------------------------------------------
# uas_start DIR LIMIT
UAS_PID=""
uas_start() {
	local dir=$1 limit=$2
	(cd "$dir" && exec timeout -k 5 "$limit" "$SIPP" -sf "$SCEN/uas.xml" "${SIPP_COMMON[@]}" -p "$UAS_PORT" \
		-error_file "$dir/uas_err.log" -stf "$dir/uas_stat.csv" -timeout "${limit}s" \
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
# uac_start DIR LIMIT RATE CALLS CONCURRENCY DURATION_MS
UAC_PID=""
uac_start() {
	local dir=$1 limit=$2 rate=$3 calls=$4 conc=$5 dur=$6
	(cd "$dir" && exec timeout -k 5 "$limit" "$SIPP" -sf "$SCEN/uac.xml" "${SIPP_COMMON[@]}" -p "$UAC_PORT" \
		-s callee -r "$rate" -rp 1000 -m "$calls" -l "$conc" -d "$dur" \
		-error_file "$dir/uac_err.log" -stf "$dir/uac_stat.csv" -trace_screen -screen_file "$dir/uac_screen.log" \
		"127.0.0.1:$SUT_PORT" >"$dir/uac.out" 2>&1) &
	UAC_PID=$!
	PIDS+=("$UAC_PID")
}

# sstat FILE COLUMN: the last row's value of a SIPp -trace_stat column
sstat() {
	[ -s "$1" ] || { echo 0; return; }
	awk -F';' -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
		{ v = $k } END { print (k && v != "") ? v : 0 }' "$1"
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
put() { echo "$1=$2" >>"$SUMMARY"; }
calc() { awk "BEGIN { printf \"$1\n\", ($2) }"; }

# ---- phase 1: rate steps ---------------------------------------------------
phase_rate() {
	local run=$1 rate best=0 best_ach=0 stopped="none"
	for rate in $RATES; do
		local d="$OUT/run$run/rate_$rate" calls=$((rate * STEP_SECS))
		mkdir -p "$d"
		log "run $run rate $rate calls/s: $calls calls of ${CALL_MS} ms"
		sut_start "$d" $((STEP_SECS + 120))
		uas_start "$d" $((STEP_SECS + 90))
		local rss0 c0 c1 t_start t_end
		rss0=$(sut_mem_kb); c0=$(cpu_ticks "$SUT_PID"); t_start=$(date +%s.%N)
		local peak=$rss0 r
		uac_start "$d" $((STEP_SECS * 3 + 30)) "$rate" "$calls" $((rate * 3 > 1000 ? rate * 3 : 1000)) "$CALL_MS"
		while alive "$UAC_PID"; do
			r=$(sut_mem_kb); [ "${r:-0}" -gt "$peak" ] && peak=$r
			sleep 1
		done
		local uac_rc=0; wait "$UAC_PID" 2>/dev/null || uac_rc=$?
		t_end=$(date +%s.%N)
		c1=$(cpu_ticks "$SUT_PID"); r=$(sut_mem_kb)
		local sut_alive=1; alive "$SUT_PID" || sut_alive=0
		local drops_sut drops_uas drops_uac
		drops_sut=$(udp_drops "$SUT_PORT"); drops_uas=$(udp_drops "$UAS_PORT"); drops_uac=$(udp_drops "$UAC_PORT")
		sut_stop "$d"
		uas_stop
		local ok failed created ach fpct cpus cpucall
		ok=$(sstat "$d/uac_stat.csv" 'SuccessfulCall(C)')
		failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
		created=$(sstat "$d/uac_stat.csv" 'OutgoingCall(C)')
		ach=$(achieved_rate "$d/uac_stat.csv" "$calls")
		# calls never created or never finished (SIPp killed) count as failed
		fpct=$(calc "%.3f" "($calls - $ok) * 100 / $calls")
		cpus=$(calc "%.2f" "($c1 - $c0) / $TCK")
		cpucall=$(calc "%.1f" "$ok > 0 ? ($c1 - $c0) / $TCK * 1e6 / $ok : 0")
		put "rate.$rate.offered" "$rate"
		put "rate.$rate.achieved" "$ach"
		put "rate.$rate.calls" "$calls"
		put "rate.$rate.created" "$created"
		put "rate.$rate.successful" "$ok"
		put "rate.$rate.failed_sipp" "$failed"
		put "rate.$rate.failed_pct" "$fpct"
		put "rate.$rate.sut_cpu_s" "$cpus"
		put "rate.$rate.cpu_us_per_call" "$cpucall"
		put "rate.$rate.rss_peak_kb" "$peak"
		put "rate.$rate.rss_end_kb" "$r"
		put "rate.$rate.uac_exit" "$uac_rc"
		put "rate.$rate.udp_drops_sut" "$drops_sut"
		put "rate.$rate.udp_drops_sipp" "$((drops_uas + drops_uac))"
		put "rate.$rate.sut_stop" "$(grep -q '^exited' "$d/stop.txt" && echo clean || echo hung)"
		put "rate.$rate.cdr_not_caller_bye" "$(cat "$d"/cdr/*.csv 2>/dev/null | awk -F, 'NR > 1 && $10 != "end_reason" && $10 != "caller_bye"' | wc -l)"
		log "  achieved $ach/s, ok $ok/$calls, failed $fpct %, cpu ${cpus}s = ${cpucall} us/call, rss peak $peak kB, uac exit $uac_rc, udp drops sbcd $drops_sut sipp $((drops_uas + drops_uac)), sbcd $(cat "$d/stop.txt")"
		if [ "$sut_alive" -eq 0 ]; then stopped="sut_died_at_$rate"; log "  SUT DIED: $(tail -3 "$d/sbcd.log")"; break; fi
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
		local d="$OUT/run$run/hold_$n" ramp=$((n / HOLD_RATE + 1))
		mkdir -p "$d"
		log "run $run hold $n calls (ramp ${HOLD_RATE}/s)"
		sut_start "$d" $((ramp * 3 + SETTLE_SECS + 150))
		sleep 3
		local idle; idle=$(sut_mem_kb)
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
		local failed reached rss_up rss_set cur_calls
		failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
		cur_calls=$(sstat "$d/uac_stat.csv" 'CurrentCall')
		rss_up=$(sut_mem_kb)
		echo "t_s rss_kb" >"$d/rss.txt"
		local s
		for s in $(seq "$SETTLE_SECS"); do
			echo "$s $(sut_mem_kb)" >>"$d/rss.txt"; sleep 1
		done
		rss_set=$(sut_mem_kb)
		failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
		cur_calls=$(sstat "$d/uac_stat.csv" 'CurrentCall')
		local sut_alive=1; alive "$SUT_PID" || sut_alive=0
		put "hold.$n.udp_drops_sut" "$(udp_drops "$SUT_PORT")"
		kill -TERM "$UAC_PID" 2>/dev/null || true; wait "$UAC_PID" 2>/dev/null || true
		uas_stop
		# calls are still up in sbcd: SIGTERM would BYE all of them towards
		# dead SIPps; stop it hard between phases
		kill -KILL "$SUT_PID" 2>/dev/null || true; wait "$SUT_TPID" 2>/dev/null || true
		put "hold.$n.target" "$n"
		put "hold.$n.established" "$cur_calls"
		put "hold.$n.failed_sipp" "$failed"
		put "hold.$n.ramp_s" "$up"
		put "hold.$n.rss_idle_kb" "$idle"
		put "hold.$n.rss_up_kb" "$rss_up"
		put "hold.$n.rss_settled_kb" "$rss_set"
		put "hold.$n.bytes_per_call_up" "$(calc "%.0f" "$cur_calls > 0 ? ($rss_up - $idle) * 1024 / $cur_calls : 0")"
		put "hold.$n.bytes_per_call_settled" "$(calc "%.0f" "$cur_calls > 0 ? ($rss_set - $idle) * 1024 / $cur_calls : 0")"
		put "hold.$n.sut_alive" "$sut_alive"
		log "  established $cur_calls/$n (failed $failed) in ${up}s; rss idle $idle, up $rss_up, after ${SETTLE_SECS}s $rss_set kB"
		[ "$sut_alive" -eq 1 ] || log "  SUT DIED: $(tail -3 "$d/sbcd.log")"
	done
}

# ---- phase 3: churn --------------------------------------------------------
phase_churn() {
	local run=$1 d="$OUT/run$run/churn" calls=$((CHURN_RATE * CHURN_SECS))
	mkdir -p "$d"
	log "run $run churn ${CHURN_RATE}/s of ${CALL_MS}-ms calls for ${CHURN_SECS}s, then ${AFTER_SECS}s idle"
	sut_start "$d" $((CHURN_SECS * 2 + AFTER_SECS + 150))
	sleep 3
	local idle peak c0 c1 t=0 r
	idle=$(sut_mem_kb); peak=$idle; c0=$(cpu_ticks "$SUT_PID")
	uas_start "$d" $((CHURN_SECS * 2 + AFTER_SECS + 60))
	uac_start "$d" $((CHURN_SECS * 2 + 30)) "$CHURN_RATE" "$calls" $((CHURN_RATE * 3)) "$CALL_MS"
	echo "t_s phase rss_kb" >"$d/rss.txt"
	while alive "$UAC_PID"; do
		r=$(sut_mem_kb); echo "$t load $r" >>"$d/rss.txt"; [ "$r" -gt "$peak" ] && peak=$r
		sleep 1; t=$((t + 1))
	done
	local uac_rc=0; wait "$UAC_PID" 2>/dev/null || uac_rc=$?
	c1=$(cpu_ticks "$SUT_PID")
	local rss_end; rss_end=$(sut_mem_kb)
	local s
	for s in $(seq "$AFTER_SECS"); do
		sleep 1; r=$(sut_mem_kb); echo "$((t + s)) after $r" >>"$d/rss.txt"; [ "$r" -gt "$peak" ] && peak=$r
	done
	local rss_after; rss_after=$(sut_mem_kb)
	local sut_alive=1; alive "$SUT_PID" || sut_alive=0
	local drops_sut; drops_sut=$(udp_drops "$SUT_PORT")
	sut_stop "$d"
	uas_stop
	local ok failed ach
	ok=$(sstat "$d/uac_stat.csv" 'SuccessfulCall(C)')
	failed=$(sstat "$d/uac_stat.csv" 'FailedCall(C)')
	ach=$(achieved_rate "$d/uac_stat.csv" "$calls")
	put "churn.offered" "$CHURN_RATE"
	put "churn.achieved" "$ach"
	put "churn.calls" "$calls"
	put "churn.successful" "$ok"
	put "churn.failed_pct" "$(calc "%.3f" "($calls - $ok) * 100 / $calls")"
	put "churn.cpu_us_per_call" "$(calc "%.1f" "$ok > 0 ? ($c1 - $c0) / $TCK * 1e6 / $ok : 0")"
	put "churn.rss_idle_kb" "$idle"
	put "churn.rss_peak_kb" "$peak"
	put "churn.rss_end_load_kb" "$rss_end"
	put "churn.rss_after_${AFTER_SECS}s_kb" "$rss_after"
	put "churn.growth_peak_mb" "$(calc "%.1f" "($peak - $idle) / 1024")"
	put "churn.sut_alive" "$sut_alive"
	put "churn.udp_drops_sut" "$drops_sut"
	put "churn.sut_stop" "$(grep -q '^exited' "$d/stop.txt" && echo clean || echo hung)"
	log "  ok $ok/$calls (failed $failed), achieved $ach/s; rss idle $idle, peak $peak, end $rss_end, +${AFTER_SECS}s $rss_after kB; sbcd $(cat "$d/stop.txt")"
}

# ---- runs, medians, table --------------------------------------------------
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "cores=$(nproc)"
	echo "ram=$(free -g | awk '/^Mem:/{print $2" GiB"}')"
	echo "kernel=$(uname -r)"
	echo "go=$(/usr/local/go/bin/go version 2>/dev/null | awk '{print $3}')"
	echo "sipp=$("$SIPP" -v 2>&1 | grep -o 'v[0-9.]*[^ ]*' | head -1)"
	echo "sut=$SUT $("$SBCD" version 2>/dev/null || true)"
} >"$OUT/machine.txt"

for run in $(seq "$RUNS"); do
	mkdir -p "$OUT/run$run"
	SUMMARY="$OUT/run$run/summary.txt"
	: >"$SUMMARY"
	for ph in $PHASES; do "phase_$ph" "$run"; done
done

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
{
	echo "== machine =="
	cat "$OUT/machine.txt"
	echo
	echo "== summary (key=value; medians of $RUNS run(s)) =="
	cat "$S"
	echo
	if grep -q '^rate\.' "$S"; then
		echo "== call rate (${CALL_MS}-ms calls, ${STEP_SECS} s per step) =="
		printf '%-8s %-9s %-9s %-10s %-11s %-8s\n' offered achieved failed% sut_cpu_s cpu_us/call rss_MB
		for rate in $RATES; do
			[ -n "$(g "rate.$rate.offered")" ] || continue
			printf '%-8s %-9s %-9s %-10s %-11s %-8s\n' "$rate" "$(g "rate.$rate.achieved")" "$(g "rate.$rate.failed_pct")" \
				"$(g "rate.$rate.sut_cpu_s")" "$(g "rate.$rate.cpu_us_per_call")" "$(calc "%.1f" "$(g "rate.$rate.rss_peak_kb") / 1024")"
		done
		echo "highest offered rate with < ${FAIL_PCT} % failed: $(g rate.highest_ok_offered) (achieved $(g rate.highest_ok_achieved)); stop: $(g rate.stop_reason)"
		echo
	fi
	if grep -q '^hold\.' "$S"; then
		echo "== memory per established call =="
		printf '%-8s %-12s %-9s %-9s %-11s %-10s %-14s\n' target established idle_MB up_MB settled_MB B/call_up B/call_settled
		for n in $HOLDS; do
			[ -n "$(g "hold.$n.target")" ] || continue
			printf '%-8s %-12s %-9s %-9s %-11s %-10s %-14s\n' "$n" "$(g "hold.$n.established")" \
				"$(calc "%.1f" "$(g "hold.$n.rss_idle_kb") / 1024")" "$(calc "%.1f" "$(g "hold.$n.rss_up_kb") / 1024")" \
				"$(calc "%.1f" "$(g "hold.$n.rss_settled_kb") / 1024")" "$(g "hold.$n.bytes_per_call_up")" "$(g "hold.$n.bytes_per_call_settled")"
		done
		echo
	fi
	if grep -q '^churn\.' "$S"; then
		echo "== churn (${CHURN_RATE}/s of ${CALL_MS}-ms calls for ${CHURN_SECS} s) =="
		printf '%-9s %-8s %-8s %-8s %-9s %-12s %-11s\n' achieved failed% idle_MB peak_MB end_MB "+${AFTER_SECS}s_MB" cpu_us/call
		printf '%-9s %-8s %-8s %-8s %-9s %-12s %-11s\n' "$(g churn.achieved)" "$(g churn.failed_pct)" \
			"$(calc "%.1f" "$(g churn.rss_idle_kb) / 1024")" "$(calc "%.1f" "$(g churn.rss_peak_kb) / 1024")" \
			"$(calc "%.1f" "$(g churn.rss_end_load_kb) / 1024")" "$(calc "%.1f" "$(g "churn.rss_after_${AFTER_SECS}s_kb") / 1024")" \
			"$(g churn.cpu_us_per_call)"
		echo
	fi
	echo "raw logs: $OUT"
} | tee "$OUT/report.txt"
