#!/usr/bin/env python3
"""Writes a valid ferry ledger of N entries (the canonical form: serde_json's compact output
in the entry's field order, SHA-256 over the entry with `hash` empty, chained by `prev`), for
ci/bench-scale.sh. Usage: gen-ledger.py FILE N"""
import hashlib
import json
import sys

path, n = sys.argv[1], int(sys.argv[2])
prev = "0" * 64
events = ["step_started", "step_succeeded"]
with open(path, "w", encoding="utf-8") as f:
    for seq in range(n):
        step = f"s{seq // 2 + 1:06d}"
        e = {
            "v": 1,
            "seq": seq,
            "time": "2026-12-01T00:00:00.000Z",
            "actor": "bench",
            "event": events[seq % 2],
            "plan_id": "00000000-0000-4000-8000-000000000000",
            "step": step,
            "target": f"site{seq // 2:06d}/local/app",
            "site": f"site{seq // 2:06d}",
            "app": "app",
            "from": "1.0.0",
            "to": "2.0.0",
        }
        if seq % 2:
            e["outcome"] = "ok"
            e["duration_ms"] = 3
            e["message"] = None
            del e["message"]
        e["prev"] = prev
        e["hash"] = ""
        body = json.dumps(e, separators=(",", ":"), ensure_ascii=False)
        e["hash"] = hashlib.sha256(body.encode()).hexdigest()
        line = json.dumps(e, separators=(",", ":"), ensure_ascii=False)
        f.write(line + "\n")
        prev = e["hash"]
