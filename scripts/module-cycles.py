#!/usr/bin/env python3
"""Import graph of the top-level modules of src/ (non-test code) and its cycles.

Usage: scripts/module-cycles.py [--graph]   (exit 1 when there is a cycle)
A module's non-test code is its files minus `#[cfg(test)]` items and `*tests.rs` files.
"""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

def strip_tests(text):
    # Drop `#[cfg(test)]` items: the attribute and the brace-balanced item after it.
    out, i = [], 0
    while True:
        j = text.find("#[cfg(test)]", i)
        if j < 0:
            out.append(text[i:]); break
        out.append(text[i:j])
        k = text.find("{", j)
        semi = text.find(";", j)
        if semi >= 0 and (k < 0 or semi < k):
            i = semi + 1; continue
        depth, p = 0, k
        while p < len(text):
            if text[p] == "{": depth += 1
            elif text[p] == "}":
                depth -= 1
                if depth == 0: break
            p += 1
        i = p + 1
    return "".join(out)

def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)

def top_modules():
    mods = {}
    for name in os.listdir(SRC):
        p = os.path.join(SRC, name)
        if name in ("lib.rs", "main.rs"): continue
        if os.path.isdir(p):
            files = [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs if f.endswith(".rs")]
            mods.setdefault(name, []).extend(files)
        elif name.endswith(".rs"):
            m = name[:-3]
            mods.setdefault(m, []).append(p)
    return mods

def deps(files, names, me):
    found = set()
    for f in files:
        if f.endswith("tests.rs"): continue
        t = strip_comments(strip_tests(open(f, encoding="utf-8").read()))
        for m in re.finditer(r"crate::(\{[^}]*\}|\w+)", t):
            g = m.group(1)
            cands = re.findall(r"(?:^|[{,\s])(\w+)", g) if g.startswith("{") else [g]
            for c in cands:
                if c in names and c != me: found.add(c)
    return found

def main():
    mods = top_modules()
    names = set(mods)
    g = {m: deps(fs, names, m) for m, fs in mods.items()}
    if "--graph" in sys.argv:
        for m in sorted(g): print(f"{m:10} -> {', '.join(sorted(g[m]))}")
    # Strongly connected components (Tarjan).
    idx, low, on, st, comps, n = {}, {}, set(), [], [], [0]
    def sc(v):
        idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
        for w in g[v]:
            if w not in idx: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            c = []
            while True:
                w = st.pop(); on.discard(w); c.append(w)
                if w == v: break
            comps.append(c)
    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in idx: sc(v)
    cyc = [sorted(c) for c in comps if len(c) > 1]
    for c in cyc:
        print("cycle:", " ⇄ ".join(c))
        for a in c:
            print(f"   {a} -> {', '.join(sorted(x for x in g[a] if x in c))}")
    if not cyc: print("no cycles between top-level modules")
    sys.exit(1 if cyc else 0)

main()
