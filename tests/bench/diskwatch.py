#!/usr/bin/env python3
"""Usage: diskwatch.py [DEVICE] (default vda, as /proc/diskstats names it)

Every 2 s: the disk's reads and writes per second, MB/s, and mean ms per read and per write."""
import sys, time
dev = sys.argv[1] if len(sys.argv) > 1 else "vda"
def snap():
    for line in open("/proc/diskstats"):
        f = line.split()
        if f[2] == dev:
            return time.time(), [int(x) for x in (f[3], f[5], f[6], f[7], f[9], f[10])]
prev = snap()
while True:
    time.sleep(2)
    cur = snap()
    dt = cur[0] - prev[0]
    d = [b - a for a, b in zip(prev[1], cur[1])]
    print(time.strftime("%H:%M:%S"),
          f"r/s {d[0]/dt:6.0f} rMB/s {d[1]*512/dt/1e6:6.1f} r_ms {d[2]/max(d[0],1):6.2f}"
          f"  w/s {d[3]/dt:6.0f} wMB/s {d[4]*512/dt/1e6:6.1f} w_ms {d[5]/max(d[3],1):6.2f}", flush=True)
    prev = cur
