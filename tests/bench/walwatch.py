#!/usr/bin/env python3
"""Watches a live SQLite WAL without opening the database (so it holds nothing back).

Usage: walwatch.py DATA_DIR/census.db-shm [PERIOD_S]   (Linux, little-endian)

Reads the WAL index (the -shm file) 200 times a second and prints, every PERIOD_S seconds:
  mx        frames in the WAL since it last started over (mxFrame)
  nb        frames copied back into the database (nBackfill); lag = mx - nb
  full      share of samples with every frame copied back
  restarts  times the WAL started over (mx went down) since the script started
  marks     the five read marks (the frame each reader slot reads up to; 2^32-1 unused)
  locks     share of samples each lock byte was held, from /proc/locks: slot 0 is the write
            lock, 1 the checkpoint lock, 2 recovery, 3 to 7 read slots 0 to 4 (R shared,
            W exclusive). A reader in slot 3 (read slot 0) reads without the WAL and keeps any
            checkpoint from copying; readers in slots 4 to 7 keep the WAL from starting over.
"""
import os, struct, sys, time
shm = sys.argv[1]; period = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
hz = 200
def locks(ino):
    held = set()
    with open('/proc/locks') as f:
        for line in f:
            p = line.split()
            if p[1] == '->': p = p[:1] + p[2:]
            if not p[5].endswith(':%d' % ino): continue
            a, b = int(p[6]), (int(p[7]) if p[7] != 'EOF' else 1 << 62)
            for off in range(max(a, 120), min(b, 127) + 1):
                held.add((off - 120, p[3]))
    return held
restarts = 0; last_mx = None
while True:
    t0 = time.time(); counts = {}; n = 0; lo_gap = None; full = 0
    while time.time() - t0 < period:
        try:
            ino = os.stat(shm).st_ino
            with open(shm, 'rb') as f: b = f.read(136)
        except FileNotFoundError:
            time.sleep(1); continue
        mx = struct.unpack_from('<I', b, 16)[0]; nb = struct.unpack_from('<I', b, 96)[0]
        if last_mx is not None and mx < last_mx: restarts += 1
        last_mx = mx
        if nb == mx: full += 1
        for k in locks(ino): counts[k] = counts.get(k, 0) + 1
        n += 1; time.sleep(1 / hz)
    marks = struct.unpack_from('<5I', b, 100)
    occ = ' '.join('%d%s:%.0f%%' % (s, m[0], 100 * c / n) for (s, m), c in sorted(counts.items()))
    print('%s mx %d nb %d lag %d full %.0f%% restarts %d marks %s locks[%s]' % (
        time.strftime('%T'), mx, nb, mx - nb, 100 * full / max(n, 1), restarts, list(marks), occ), flush=True)
