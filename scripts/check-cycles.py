#!/usr/bin/env python3
"""Fail when a module of a crate imports a module that imports it back.

    scripts/check-cycles.py [CRATE_DIR ...]      (default: every workspace crate)

Each crate's module tree is read from its `mod NAME;` declarations, from
`src/lib.rs`, `src/main.rs` and `src/bin/NAME/main.rs` (a binary's own
modules form a tree of their own). A module is one file; a module written inline (`mod x { ... }`) counts
as part of its file, and `#[cfg(test)]` modules are left out (test code may
use what it tests from anywhere). Module A imports module B when A's code
names a path into B: a `use` declaration (re-exports included) or a path
written in the code (`crate::rules::now_ms()`, `super::Core`, `zip::unpack`
for a child module `zip`). Declaring a child (`mod zip;`) is not an import.
An import of an item resolves to the module that holds it, as far as the
path names modules: `crate::store::Guarded` is an import of `store` even if
`store` only re-exports it.

Every strongly connected set of two or more modules is a cycle: printed
with the paths that tie it, and the exit status is 1. Comments and strings
are ignored, so doc links (`[`crate::emu`]`) are not imports.
"""

import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """The source with comments, strings and char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 300]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + re.sub(r"[^\n]", " ", text[i + 1:j]) + '"')
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}') but not a lifetime ('a).
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|[^\\'])'", text[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


CFG_TEST = re.compile(r"#\[cfg\((test|all\(test[^\]]*)\)\]\s*$")


def is_test_item(text, at):
    """Whether the item starting at `at` carries #[cfg(test)] among the attributes before it."""
    before = text[:at].rstrip()
    # Walk back over attributes (and `pub`/`pub(crate)` is part of the item, handled by the caller).
    while before.endswith("]"):
        start = before.rfind("#[")
        if start < 0:
            return False
        attr = before[start:]
        if re.match(r"#\[cfg\((test|all\(test)", attr):
            return True
        before = before[:start].rstrip()
    return False


def expand_use(tree):
    """`a::{b, c::{d, self}}` -> [[a, b], [a, c, d], [a, c]] (aliases dropped, globs cut)."""
    tokens = re.findall(IDENT + r"|::|[{},*]", tree)
    pos = 0
    out = []

    def parse(prefix):
        # One use tree: a path, maybe ending in a group or a glob, maybe aliased.
        nonlocal pos
        segs = list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                while pos < len(tokens) and tokens[pos] != "}":
                    parse(segs)
                    if pos < len(tokens) and tokens[pos] == ",":
                        pos += 1
                pos += 1
                return
            if t == "*":
                pos += 1
                break
            if t == "::":
                pos += 1
                continue
            if t in (",", "}"):
                break
            if t == "as":
                pos += 2
                break
            segs.append(t)
            pos += 1
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        if segs:
            out.append(segs)

    while pos < len(tokens):
        parse([])
        if pos < len(tokens) and tokens[pos] == ",":
            pos += 1
        elif pos < len(tokens) and tokens[pos] not in ("{",):
            pos += 1
    return out


class Crate:
    def __init__(self, root_file, label):
        self.label = label
        self.files = {}  # module path (tuple) -> file
        self.children = defaultdict(set)  # module -> child names
        self.code = {}  # module -> stripped code with test modules blanked
        self.inline = {}  # module -> spans of the inline modules in its file
        self.load(root_file, ())

    def child_file(self, parent_file, parent_is_dir_owner, name):
        d = os.path.dirname(parent_file)
        if not parent_is_dir_owner:
            d = os.path.join(d, os.path.splitext(os.path.basename(parent_file))[0])
        for cand in (os.path.join(d, name + ".rs"), os.path.join(d, name, "mod.rs")):
            if os.path.exists(cand):
                return cand
        return None

    def load(self, path, module):
        with open(path, encoding="utf-8") as f:
            text = strip(f.read())
        # Blank out #[cfg(test)] items (inline test modules, test-only imports).
        for m in list(re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", text)):
            if is_test_item(text, m.start() - len(re.match(r".*?((pub(\([^)]*\))?\s*)?)$", text[:m.start()], re.S).group(1))):
                end = matching_brace(text, m.end() - 1)
                text = text[:m.start()] + re.sub(r"[^\n]", " ", text[m.start():end + 1]) + text[end + 1:]
        for m in list(re.finditer(r"(?m)^[ \t]*(pub(\([^)]*\))?\s+)?use\s[^;]*;", text)):
            if is_test_item(text, m.start()):
                text = text[:m.start()] + re.sub(r"[^\n]", " ", m.group(0)) + text[m.end():]
        self.files[module] = path
        self.code[module] = text
        # Inline modules (part of this file): a `super` inside one first
        # climbs out of it, still in this file.
        self.inline[module] = [
            (m.end() - 1, matching_brace(text, m.end() - 1)) for m in re.finditer(r"\bmod\s+" + IDENT + r"\s*\{", text)
        ]
        owner = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        for m in re.finditer(r"(?m)^[ \t]*(pub(\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text):
            if is_test_item(text, m.start()):
                continue
            name = m.group(3)
            f = self.child_file(path, owner, name)
            if f:
                self.children[module].add(name)
                self.load(f, module + (name,))

    def resolve(self, module, segs, pos=0):
        """The module a path written in `module` at `pos` points into, or None (external, or itself)."""
        if not segs:
            return None
        depth = sum(1 for a, b in self.inline[module] if a < pos < b)
        while depth and segs and segs[0] == "super":
            segs, depth = segs[1:], depth - 1
        if not segs or (depth and segs[0] == "self"):
            return None
        if segs[0] == "crate":
            at, rest = (), segs[1:]
        elif segs[0] in ("super", "self"):
            at, rest = module, segs
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if not at:
                        return None
                    at = at[:-1]
                rest = rest[1:]
        elif segs[0] in self.children[module]:
            at, rest = module, segs
        else:
            return None
        while rest and rest[0] in self.children[at]:
            at = at + (rest[0],)
            rest = rest[1:]
        return at

    def imports(self):
        """(from, to) -> list of (line, text) that tie them."""
        edges = defaultdict(list)
        for module, text in self.code.items():
            lines = text.split("\n")

            def line_of(pos):
                return text.count("\n", 0, pos) + 1

            found = []
            for m in re.finditer(r"(?m)^[ \t]*(pub(\([^)]*\))?\s+)?use\s+([^;]*);", text):
                for segs in expand_use(m.group(3)):
                    found.append((m.start(3), segs))
            use_spans = [(m.start(), m.end()) for m in re.finditer(r"(?m)^[ \t]*(pub(\([^)]*\))?\s+)?use\s+[^;]*;", text)]
            for m in re.finditer(r"(?<![A-Za-z0-9_:])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)", text):
                if any(a <= m.start() < b for a, b in use_spans):
                    continue
                segs = [s.strip() for s in m.group(1).split("::")]
                found.append((m.start(), segs))
            for pos, segs in found:
                target = self.resolve(module, segs, pos)
                if target is None or target == module:
                    continue
                # A module naming its own descendant's items through a path
                # is an import of that descendant; naming an ancestor is too.
                ln = line_of(pos)
                edges[(module, target)].append((ln, lines[ln - 1].strip()[:120]))
        return edges


def sccs(nodes, succ):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def name(m):
    return "crate::" + "::".join(m) if m else "crate"


def check(crate):
    edges = crate.imports()
    succ = defaultdict(set)
    for a, b in edges:
        succ[a].add(b)
    bad = [c for c in sccs(list(crate.files), succ) if len(c) > 1]
    for comp in bad:
        members = set(comp)
        print(f"{crate.label}: import cycle among {len(comp)} modules: " + ", ".join(sorted(crate.files[m] for m in comp)))
        for (a, b), ties in sorted(edges.items()):
            if a in members and b in members:
                ln, line = ties[0]
                more = f" (+{len(ties) - 1} more)" if len(ties) > 1 else ""
                print(f"  {name(a)} -> {name(b)}: {crate.files[a]}:{ln}: {line}{more}")
    return len(bad), len(crate.files), sum(1 for _ in edges)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    dirs = sys.argv[1:] or sorted(
        os.path.join(repo, d) for d in os.listdir(repo) if os.path.exists(os.path.join(repo, d, "Cargo.toml")) and os.path.isdir(os.path.join(repo, d, "src"))
    )
    cycles = 0
    for d in dirs:
        bins = os.path.join(d, "src", "bin")
        roots = ["lib.rs", "main.rs"] + sorted(
            os.path.join("bin", b, "main.rs") for b in (os.listdir(bins) if os.path.isdir(bins) else [])
        )
        for root in roots:
            f = os.path.join(d, "src", root)
            if os.path.exists(f):
                c, n, e = check(Crate(f, os.path.relpath(f, repo)))
                cycles += c
                print(f"{os.path.relpath(f, repo)}: {n} modules, {e} imports between them, {c} cycles")
    if cycles:
        print(f"{cycles} import cycles: a module must not import one that imports it back (put what both need where both can import it)")
        sys.exit(1)


if __name__ == "__main__":
    main()
