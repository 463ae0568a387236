#!/usr/bin/env python3
"""Fails unless every dynamic symbol libkvbits.so defines starts with kvb_ (and some do)."""
import subprocess
import sys

lib = sys.argv[1]
out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
names = [line.split()[-1] for line in out.splitlines() if line.strip() and line.split()[-2] in "TDBRVW"]
bad = [n for n in names if not n.startswith("kvb_")]
if bad or not names:
    print(f"unexpected exported symbols: {bad[:20]} (total {len(bad)}), kvb_ symbols: {len(names) - len(bad)}")
    sys.exit(1)
print(f"{len(names)} exported symbols, all kvb_*")
