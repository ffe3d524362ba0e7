#!/usr/bin/env python3
"""Compare two `lmd-run generate` JSON-lines outputs (same inputs): prints how many texts are equal
and the first difference of each mismatch; exit 1 when any differs. Usage: compare_gen.py LABEL A B"""
import json
import sys

label, a, b = sys.argv[1:4]
ta = [json.loads(l) for l in open(a) if l.strip()]
tb = [json.loads(l) for l in open(b) if l.strip()]
bad = 0
for x, y in zip(ta, tb):
    if "error" in x or "error" in y or x["text"] != y["text"]:
        bad += 1
        if bad <= 5:
            sx, sy = x.get("text", x.get("error")), y.get("text", y.get("error"))
            i = next((k for k in range(min(len(sx), len(sy))) if sx[k] != sy[k]), min(len(sx), len(sy)))
            print(f"  {label} #{x.get('index')}: differ at char {i}: {sx[i:i+40]!r} vs {sy[i:i+40]!r}")
n = min(len(ta), len(tb))
ok = bad == 0 and n == len(ta) == len(tb) and n > 0
print(f"{label}: {n - bad}/{n} identical{'' if ok else '  <-- MISMATCH'}")
sys.exit(0 if ok else 1)
