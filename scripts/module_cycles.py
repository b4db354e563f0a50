#!/usr/bin/env python3
"""Finds import cycles between the top-level modules of each workspace crate (crate::x / super::x
references outside test modules). Exit 1 naming each cycle; used by scripts/check-layers.sh."""
import os
import re
import sys


def module_graph(src):
    graph = {}
    for folder, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[0] == "bin":
                continue
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            top = parts[0] if parts else ""
            text = open(path, encoding="utf-8").read().split("#[cfg(test)]\nmod tests")[0]
            text = re.sub(r"//.*", "", text)  # comments and doc links are not imports
            deps = set(re.findall(r"\bcrate::([a-z_]+)", text))
            if len(parts) == 1:
                deps |= set(re.findall(r"\bsuper::([a-z_]+)", text))
            graph.setdefault(top, set()).update(d for d in deps if d != top)
    return graph


def cycles(graph):
    found = set()

    def walk(node, path):
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt in path:
                cyc = path[path.index(nxt):]
                k = cyc.index(min(cyc))
                found.add(tuple(cyc[k:] + cyc[:k]))
            elif len(path) < 16:
                walk(nxt, path + [nxt])

    for n in graph:
        if n:
            walk(n, [n])
    return sorted(found)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "crates"
    bad = 0
    for crate in sorted(os.listdir(root)):
        src = os.path.join(root, crate, "src")
        if not os.path.isdir(src):
            continue
        for cyc in cycles(module_graph(src)):
            print(f"[layers] import cycle in {crate}: {' -> '.join(cyc + (cyc[0],))}")
            bad += 1
    if bad == 0:
        print("[layers] no import cycle between the modules of any crate")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
