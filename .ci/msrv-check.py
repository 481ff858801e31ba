#!/usr/bin/env python3
"""The declared rust-version must be at least that of every locked dependency of the
published crates (normal and build dependencies, every feature)."""
import json
import subprocess
import sys

PUBLISHED = {"tower-cache", "tower-health", "tower-balance-ext", "tower-autoscale"}


def version(v):
    parts = [int(x) for x in (v or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
roots = [p for p in meta["packages"] if p["name"] in PUBLISHED]
declared = max(version(p.get("rust_version")) for p in roots)
seen, stack = set(), [p["id"] for p in roots]
while stack:
    i = stack.pop()
    if i in seen:
        continue
    seen.add(i)
    for dep in nodes[i]["deps"]:
        if any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
            stack.append(dep["pkg"])
root_ids = {p["id"] for p in roots}
highest = max(seen - root_ids, key=lambda i: version(packages[i].get("rust_version")))
need = version(packages[highest].get("rust_version"))
print(
    f"declared rust-version {'.'.join(map(str, declared))}; highest among locked dependencies: "
    f"{'.'.join(map(str, need))} ({packages[highest]['name']})"
)
if need > declared:
    sys.exit(f"raise rust-version in Cargo.toml to {'.'.join(map(str, need))} or lock older dependencies")
