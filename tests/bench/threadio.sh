#!/usr/bin/env bash
# Usage: threadio.sh COLLECTOR_PID
# Every 10 s until the collector exits: the bytes read from the disk (read_bytes) and the CPU
# ticks of its writer thread (census-writer), and of all its other threads together. Threads
# that ended are no longer counted, so the others' totals can fall; read the rates between
# two lines.
pid=${1:?usage: threadio.sh COLLECTOR_PID}
while kill -0 "$pid" 2>/dev/null; do
  w=0; wc=0; o=0; oc=0
  for t in /proc/"$pid"/task/*; do
    rb=$(awk '/^read_bytes/{print $2}' "$t"/io 2>/dev/null); c=$(awk '{print $14+$15}' "$t"/stat 2>/dev/null)
    if [ "$(cat "$t"/comm 2>/dev/null)" = census-writer ]; then w=$rb; wc=$c; else o=$((o+${rb:-0})); oc=$((oc+${c:-0})); fi
  done
  echo "$(date +%T) writer_read $w writer_cpu $wc others_read $o others_cpu $oc"
  sleep 10
done
