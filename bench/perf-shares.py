#!/usr/bin/env python3
"""bench/perf-shares.py: where a process's CPU goes, from `perf script`.

Usage (during a load step, from the repository root):
  perf record -F 1999 -g -o /tmp/perf.data -p "$(pgrep -x sbcd)" -- sleep 12
  perf script -i /tmp/perf.data > /tmp/perf.txt
  python3 bench/perf-shares.py /tmp/perf.txt

Each sample goes to the first bucket, in the order below, whose pattern
matches any frame of its call stack, so a malloc inside sipgo's parser
counts as malloc and a send inside sipgo's transaction layer as sendto.
Shares are of all samples of the process (user and kernel).
"""
import collections
import re
import sys

BUCKETS = [
    ("stack growth", r"runtime\.morestack|runtime\.newstack"),
    ("gc", r"gcBgMarkWorker|gcDrain|runtime\.bgsweep|runtime\.bgscavenge|gcAssist|markroot|runtime\.gcStart|runtime\.sweepone"),
    ("sendto", r"__sys_sendto|rawOp\)\.sendto|sendmmsg"),
    ("recvfrom", r"__sys_recvfrom|rawOp\)\.recvfrom"),
    ("epoll/netpoll", r"runtime\.netpoll|epoll"),
    ("sysmon", r"runtime\.sysmon"),
    ("scheduler", r"runtime\.schedule|runtime\.findRunnable|runtime\.park_m|runtime\.goexit0|runtime\.mcall|runtime\.wakep|"
                  r"runtime\.startm|runtime\.stopm|futex|runtime\.ready|runtime\.newproc|runtime\.goready|runtime\.gopark"),
    ("malloc", r"runtime\.mallocgc|runtime\.growslice|runtime\.makeslice|runtime\.newobject|concatstring|slicebytetostring|rawstring"),
    ("cdr/fs", r"sip/cdr|ext4|fsync|vfs_write"),
    ("sipgo parse", r"sipgo/sip\.\(\*Parser\)|sipgo/sip\.Parse"),
    ("sipgo transactions", r"sipgo/sip\.\(\*(ServerTx|ClientTx|baseTx|TransactionLayer|transactionStore)"),
    ("sipgo messages", r"sipgo/sip\.(\(\*Request\)|\(\*Response\)|NewResponseFromRequest|\(\*headers\)|\(\*UDPConnection\)|\(\*TransportLayer\))"),
    ("sbcd", r"sbcd/"),
]


def main(path):
    counts = collections.Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        blocks = f.read().split("\n\n")
    for block in blocks:
        lines = block.strip().split("\n")
        if len(lines) < 2:
            continue
        frames = " | ".join(lines[1:])
        total += 1
        for name, pattern in BUCKETS:
            if re.search(pattern, frames):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    if total == 0:
        sys.exit("no samples in " + path)
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f} %  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
