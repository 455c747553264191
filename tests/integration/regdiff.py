#!/usr/bin/env python3
"""Checks that registry fixups changed exactly what their plan said.

    python3 regdiff.py PLAN.json BEFORE_DIR AFTER_DIR

BEFORE_DIR and AFTER_DIR hold HIVE.reg files (SYSTEM.reg, SOFTWARE.reg),
`hivexregedit --export HIVE '\\'` of the hives before and after the fixups.
PLAN.json is `p2vctl --json fixups plan`: its steps[i]["registry"] list the
planned edits, each {"hive", "key", "value", "before", "after"}, where
before/after are the right-hand sides hivexregedit writes ("dword:00000003",
"hex(1):53,00,...") or null (absent); a key made has "value": null and
"after": "(key)"; the default value is "value": "".

The actual changes are taken from the exports: each value added, changed or
removed, and each key added (or removed), as (hive, key, value, before,
after). Keys and value names are matched without regard to case, as Windows
does, and reported as the export writes them.

Prints each planned edit that was not made, each change that was not
planned, and each made otherwise than planned, one line each; exits 1 when
there is any, 0 (printing "N registry edits, exactly as planned") when none.
Exit status 2: the arguments or the files cannot be read.
"""

import json
import os
import sys

KEY = "(key)"


class ExportError(Exception):
    pass


def unescape_name(text, where):
    """The value name of a line starting with '"' and the rest after '='."""
    out = []
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 1
            if i == len(text):
                break
            out.append(text[i])
        elif c == '"':
            rest = text[i + 1:]
            if not rest.startswith("="):
                raise ExportError("%s: no '=' after the value name" % where)
            return "".join(out), rest[1:]
        else:
            out.append(c)
        i += 1
    raise ExportError("%s: unterminated value name" % where)


def normalize_rhs(rhs):
    """hex(N):a, b,\\ continuations joined: no blanks in hex lists."""
    rhs = rhs.strip()
    if rhs.startswith("hex"):
        rhs = "".join(rhs.split())
    return rhs


def parse_export(path):
    """{key path lower: (key path, {value name lower: (name, rhs)})}.

    Key paths are without the leading '\\' ("" for the root). hivexregedit
    writes one line per value; regedit-style continuation lines (a trailing
    '\\', the next line indented) are joined all the same."""
    keys = {}
    current = None
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        raw = f.read().split("\n")
    lines = []
    i = 0
    while i < len(raw):
        line = raw[i].rstrip("\r")
        n = i + 1
        # A value line never ends with a backslash (hex digits, a dword, or
        # a closing quote): one that does is continued on the next line.
        while not line.startswith("[") and line.rstrip().endswith("\\") and n < len(raw):
            line = line.rstrip()[:-1] + raw[n].rstrip("\r").lstrip()
            n += 1
        lines.append((i + 1, line))
        i = n
    for lineno, line in lines:
        where = "%s:%d" % (path, lineno)
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        if line.startswith("Windows Registry Editor") or line.startswith("REGEDIT"):
            continue
        if line.startswith("[") and line.rstrip().endswith("]"):
            name = line.rstrip()[1:-1]
            if name.startswith("\\"):
                name = name[1:]
            if name.lower() in keys:
                raise ExportError("%s: key [%s] twice" % (where, name))
            current = {}
            keys[name.lower()] = (name, current)
            continue
        if current is None:
            raise ExportError("%s: a value before any [key]: %s" % (where, line))
        if line.startswith("@="):
            vname, rhs = "", line[2:]
        elif line.startswith('"'):
            vname, rhs = unescape_name(line, where)
        else:
            raise ExportError("%s: not a value line: %s" % (where, line))
        if vname.lower() in current:
            raise ExportError("%s: value %s twice in one key" % (where, show_value(vname)))
        current[vname.lower()] = (vname, normalize_rhs(rhs))
    return keys


def show_value(v):
    if v is None:
        return "(the key)"
    if v == "":
        return "@ (default)"
    return '"%s"' % v


def show_rhs(r):
    return "(absent)" if r is None else r


def changes(hive, before, after):
    """{(hive, key lower, value lower or None): (key, value, before, after)}."""
    out = {}
    for k in sorted(set(before) | set(after)):
        bname, bvals = before.get(k, (None, None))
        aname, avals = after.get(k, (None, None))
        name = aname if aname is not None else bname
        if bvals is None:
            out[(hive, k, None)] = (name, None, None, KEY)
        elif avals is None:
            out[(hive, k, None)] = (name, None, KEY, None)
        bvals = bvals or {}
        avals = avals or {}
        for v in sorted(set(bvals) | set(avals)):
            b = bvals.get(v)
            a = avals.get(v)
            if b is not None and a is not None and b[1] == a[1]:
                continue
            vname = (a or b)[0]
            out[(hive, k, v)] = (name, vname, b and b[1], a and a[1])
    return out


def planned(plan):
    """Same shape as changes(); planned twice is an error of the plan."""
    out = {}
    problems = []
    for step in plan.get("steps", []):
        for e in step.get("registry") or []:
            hive = e["hive"].upper()
            key = e["key"].lstrip("\\")
            value = e.get("value")
            before = e.get("before")
            after = e.get("after")
            if before is not None:
                before = normalize_rhs(before)
            if after is not None:
                after = normalize_rhs(after)
            ident = (hive, key.lower(), None if value is None else value.lower())
            entry = (key, value, before, after)
            if ident in out:
                problems.append("planned twice (step %s): %s %s %s" % (
                    step.get("name", "?"), hive, key, show_value(value)))
                continue
            out[ident] = entry
    return out, problems


def describe(hive, entry):
    key, value, before, after = entry
    return "%s %s %s: %s -> %s" % (hive, key, show_value(value), show_rhs(before), show_rhs(after))


def main(argv):
    if len(argv) != 4:
        sys.stderr.write("usage: regdiff.py PLAN.json BEFORE_DIR AFTER_DIR\n")
        return 2
    plan_path, before_dir, after_dir = argv[1:]
    try:
        with open(plan_path, encoding="utf-8") as f:
            plan = json.load(f)
        hives = sorted(n[:-4] for n in os.listdir(before_dir) if n.endswith(".reg"))
        after_hives = sorted(n[:-4] for n in os.listdir(after_dir) if n.endswith(".reg"))
        if not hives:
            raise ExportError("%s holds no .reg export" % before_dir)
        if hives != after_hives:
            raise ExportError("%s holds %s but %s holds %s" % (
                before_dir, ", ".join(hives), after_dir, ", ".join(after_hives)))
        actual = {}
        for hive in hives:
            actual.update(changes(hive.upper(),
                                  parse_export(os.path.join(before_dir, hive + ".reg")),
                                  parse_export(os.path.join(after_dir, hive + ".reg"))))
        wanted, problems = planned(plan)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ExportError) as e:
        sys.stderr.write("regdiff: %s\n" % e)
        return 2

    for ident in sorted(set(wanted) | set(actual), key=lambda t: (t[0], t[1], t[2] or "")):
        hive = ident[0]
        w = wanted.get(ident)
        a = actual.get(ident)
        if w is not None and a is None:
            problems.append("planned, not made: " + describe(hive, w))
        elif a is not None and w is None:
            problems.append("made, not planned: " + describe(hive, a))
        elif w[2:] != a[2:]:
            problems.append("made otherwise: %s; planned %s -> %s" % (
                describe(hive, a), show_rhs(w[2]), show_rhs(w[3])))
    for p in problems:
        print(p)
    if problems:
        print("%d difference(s) between the plan's %d registry edits and the %d changes made" % (
            len(problems), len(wanted), len(actual)))
        return 1
    print("%d registry edits, exactly as planned" % len(actual))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
