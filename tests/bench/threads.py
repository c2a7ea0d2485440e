#!/usr/bin/env python3
"""Usage: threads.py COLLECTOR_PID

Samples each collector thread's state 100 times a second; every 5 s prints the four threads
most often running or in disk wait, each with the share of samples running or waiting for a
CPU (R) and in disk wait (D)."""
import os, sys, time, collections
pid = sys.argv[1]
def threads():
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            s = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        name = s[s.index("(")+1:s.rindex(")")]
        state = s[s.rindex(")")+2]
        out[tid] = (name, state)
    return out
while True:
    counts = collections.defaultdict(collections.Counter)
    names = {}
    t0 = time.time()
    n = 0
    while time.time() - t0 < 5:
        for tid, (name, st) in threads().items():
            counts[tid][st] += 1
            names[tid] = name
        n += 1
        time.sleep(0.01)
    parts = []
    for tid, c in sorted(counts.items(), key=lambda kv: -(kv[1]["R"] + kv[1]["D"]))[:4]:
        parts.append(f"{names[tid][:6]}:{tid} R{100*c['R']//n} D{100*c['D']//n}")
    print(time.strftime("%H:%M:%S"), " | ".join(parts), flush=True)
