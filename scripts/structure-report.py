#!/usr/bin/env python3
"""Structure figures of the Rust tree: lines per module, longest functions, import circles
between top-level modules, and where the code sleeps (retry loops wait somewhere).

Usage: scripts/structure-report.py [ROOT ...]   (default: src; `make structure`)

Approximate by design (a brace counter, not a parser): strings and comments holding braces can
shift a function's length by a line or two. Good enough to compare two trees.
"""

import os
import re
import sys
from collections import defaultdict


def rust_files(roots):
    for root in roots:
        for d, _, fs in os.walk(root):
            for f in fs:
                if f.endswith(".rs"):
                    yield os.path.join(d, f)


def module_of(path, root):
    rel = os.path.relpath(path, root)
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def strip(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//")[0]


def functions(path):
    """(name, first line, length) of every fn with a body."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    out = []
    i = 0
    fn_re = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
    while i < len(lines):
        m = fn_re.match(lines[i])
        if not m:
            i += 1
            continue
        name, start, depth, opened, j = m.group(6), i, 0, False, i
        while j < len(lines):
            s = strip(lines[j])
            if not opened and ";" in s and "{" not in s:
                break  # a declaration without a body (trait item)
            for ch in s:
                if ch == "{":
                    depth += 1
                    opened = True
                elif ch == "}":
                    depth -= 1
            if opened and depth <= 0:
                out.append((name, start + 1, j - start + 1))
                break
            j += 1
        i += 1
    return out


def main():
    roots = sys.argv[1:] or ["src"]
    per_module = defaultdict(int)
    per_file = {}
    funcs = []
    deps = defaultdict(set)
    sleeps = defaultdict(int)
    for root in roots:
        for path in rust_files([root]):
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            n = text.count("\n")
            mod = module_of(path, root)
            per_module[mod] += n
            per_file[path] = n
            for name, line, length in functions(path):
                funcs.append((length, f"{os.path.relpath(path, os.path.dirname(os.path.abspath(root)))}:{line}", name))
            code = "\n".join(strip(l) for l in text.splitlines())
            for other in set(re.findall(r"\bcrate::(\w+)", code)):
                if other != mod:
                    deps[mod].add(other)
            sleeps[os.path.relpath(path, os.path.dirname(os.path.abspath(root)))] += len(re.findall(r"\btime::sleep\(|\bsleep\(", text))

    total = sum(per_module.values())
    print(f"{'module':<12} {'lines':>7}")
    for mod, n in sorted(per_module.items(), key=lambda kv: -kv[1]):
        print(f"{mod:<12} {n:>7}")
    print(f"{'total':<12} {total:>7}\n")

    print("longest functions")
    print(f"{'lines':>5}  {'where':<40} name")
    for length, where, name in sorted(funcs, reverse=True)[:15]:
        print(f"{length:>5}  {where:<40} {name}")
    over = sum(1 for f in funcs if f[0] > 80)
    print(f"functions over 80 lines: {over} of {len(funcs)}\n")

    print("import circles between top-level modules (A uses B and B uses A)")
    pairs = sorted(
        {tuple(sorted((a, b))) for a in deps for b in deps[a] if a in deps.get(b, set())}
    )
    for a, b in pairs:
        print(f"  {a} <-> {b}")
    if not pairs:
        print("  none")
    lib_to_cli = sorted(m for m in deps if "cli" in deps[m] and m not in ("cli", "main"))
    print(f"library modules importing cli: {', '.join(lib_to_cli) or 'none'}\n")

    print("files that sleep (retry waits, pacing, test delays)")
    for path, n in sorted(sleeps.items(), key=lambda kv: -kv[1]):
        if n:
            print(f"  {n:>3}  {path}")


if __name__ == "__main__":
    main()
