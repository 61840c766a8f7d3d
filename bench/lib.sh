# shellcheck shell=bash
# bench/lib.sh: helpers shared by bench/keepalive.sh and bench/load.sh.
# Sourced, not run. The caller defines log, die, INSTALL and OUT first.

# alive PID: the process runs.
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# calc FORMAT EXPR: awk arithmetic, printed with FORMAT.
calc() { awk "BEGIN { printf \"$1\n\", ($2) }"; }

# sstat FILE COLUMN: the last row's value of a SIPp -trace_stat column.
sstat() {
	[ -s "$1" ] || { echo 0; return; }
	awk -F';' -v c="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) k = i; next }
		{ v = $k } END { print (k && v != "") ? v : 0 }' "$1"
}

# apt_install PKG...: apt-get install, with services kept from starting
# (policy-rc.d 101) so the package's own kamailio.service never runs; it is
# also disabled if systemd is in charge.
apt_install() {
	[ "$INSTALL" = 1 ] || die "missing $* (INSTALL=0)"
	[ "$(id -u)" = 0 ] || die "missing $*: run as root or install them"
	log "installing $* with apt-get"
	local prc=/usr/sbin/policy-rc.d made=0
	if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' >"$prc"; chmod +x "$prc"; made=1; fi
	local rc=0
	timeout 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
		>"$OUT/apt.log" 2>&1 || rc=$?
	[ "$made" = 1 ] && rm -f "$prc"
	[ "$rc" = 0 ] || die "apt-get install $* failed (rc $rc): $(tail -3 "$OUT/apt.log")"
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		timeout 30 systemctl disable --now kamailio >/dev/null 2>&1 || true
	fi
}

# percentiles P...: the numbers on stdin (one a line; blank lines ignored),
# sorted, as "n min pP... max": pP is the value at index ceil(P/100 * n)
# (1-based) of the sorted list. Empty input: "0" and a "-" for each of the
# others.
percentiles() {
	sort -g | awk -v ps="$*" 'NF { v[++n] = $1 }
		END {
			k = split(ps, p, " ")
			if (n == 0) { s = "0 -"; for (j = 1; j <= k; j++) s = s " -"; print s " -"; exit }
			s = n " " v[1]
			for (j = 1; j <= k; j++) {
				x = p[j] * n / 100; i = int(x); if (i < x) i++
				if (i < 1) i = 1
				if (i > n) i = n
				s = s " " v[i]
			}
			print s " " v[n] }'
}

# pid_sum READER PID...: READER PID for each process (a number; nothing or
# an error counts 0, as for a process that has gone), summed.
pid_sum() {
	local fn=$1 p s=0 t
	shift
	for p in "$@"; do
		t=$("$fn" "$p" 2>/dev/null) || t=0
		s=$((s + ${t:-0}))
	done
	echo "$s"
}
# stat_fields PID FIELDS: the sum of the numbered fields of /proc/PID/stat
# after the command name (utime is 12, stime 13).
stat_fields() {
	awk -v f="$2" '{ sub(/^.*\) /, ""); n = split(f, k, " "); v = 0; for (i = 1; i <= n; i++) v += $k[i]; print v }' "/proc/$1/stat"
}
utime_stime() { stat_fields "$1" "12 13"; }
stime() { stat_fields "$1" 13; }
# ctxsw_of PID: context switches (voluntary and not) over its threads.
ctxsw_of() {
	cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
pss_of() { awk '/^Pss:/{print $2}' "/proc/$1/smaps_rollup"; }

# ticks PID...: utime+stime summed over the processes (clock ticks; a
# process that has gone counts 0)
ticks() { pid_sum utime_stime "$@"; }
# sticks PID...: stime alone (the kernel's part of ticks), in clock ticks.
sticks() { pid_sum stime "$@"; }
# ctxsw PID...: context switches of every thread of the processes: each is
# a thread put to sleep or woken, which on a 2-core box is much of the cost
# of handing work between threads.
ctxsw() { pid_sum ctxsw_of "$@"; }
# pss_kb PID...: proportional set size summed over the processes (Kamailio's
# shared memory counted once, not once per process as RSS would)
pss_kb() { pid_sum pss_of "$@"; }
# term_wait PID TENTHS: SIGTERM to PID, then up to TENTHS tenths of a
# second for it to exit. Prints "exited S s after SIGTERM" and returns 0, or
# "did not exit within S s of SIGTERM" and returns 1 (the caller escalates).
term_wait() {
	local pid=$1 n=$2 i
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq "$n"); do
		if ! alive "$pid"; then
			echo "exited $((i / 10)).$((i % 10)) s after SIGTERM"
			return 0
		fi
		sleep 0.1
	done
	echo "did not exit within $((n / 10)) s of SIGTERM"
	return 1
}
