#!/usr/bin/env python3
"""Writes a synthetic estate for ci/bench-scale.sh: SITES sites x APPS apps on the local target,
one small artifact per version, health check `true`, and a release plan of every app at 2.0.0 in
waves (a canary site, then the rest). Usage: gen-estate.py DIR SITES APPS"""
import os
import sys

out, sites, apps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{out}/plans", exist_ok=True)
for v in ("1.0.0", "2.0.0"):
    os.makedirs(f"{out}/artifacts/{v}", exist_ok=True)
    with open(f"{out}/artifacts/{v}/VERSION", "w") as f:
        f.write(v)
site_ids = [f"s{i:05d}" for i in range(sites)]
with open(f"{out}/inventory.yaml", "w") as f:
    f.write("version: 1\nsites:\n")
    for s in site_ids:
        f.write(f"  - {{ id: {s}, tier: prod, clouds: [local] }}\n")
    f.write("clouds:\n  - { id: local, kind: local, local: { root: targets } }\napps:\n")
    for a in range(apps):
        f.write(f"  - id: app{a:02d}\n    version: 1.0.0\n    artifact: \"artifacts/{{version}}\"\n")
        f.write("    target: local\n    health_check: { command: [\"true\"], timeout_seconds: 5 }\n")
        f.write("    sites: [" + ", ".join(site_ids) + "]\n")
with open(f"{out}/plans/release.yaml", "w") as f:
    f.write("version: 1\nkind: release\nname: scale\nreleases:\n")
    for a in range(apps):
        f.write(f"  - {{ app: app{a:02d}, version: \"2.0.0\" }}\n")
    f.write("waves:\n")
    f.write(f"  - {{ name: canary, sites: [{site_ids[0]}] }}\n")
    if sites > 1:
        f.write("  - name: rest\n    max_parallel: 64\n    failure_threshold: 10\n    sites: [" + ", ".join(site_ids[1:]) + "]\n")
    f.write("on_failure: halt\n")
