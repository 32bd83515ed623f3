#!/usr/bin/env python3
"""Every SQL statement kept as a `static const char name[]` constant in the C sources is run
with as many parameters as it numbers: a call pg_exec(x, name, N, ...) (or db_run_params,
PQexecParams, pg_lock_key_then(x, bucket, key, name, N, ...), a pipeline's {name, N, p}) whose N is not the statement's highest $k fails at run time only
("bind message supplies 2 parameters, but prepared statement requires 3"), on the one path
that runs it. Prints each mismatch (file:line) and exits 1 when there is one.
usage: sql_params.py SRCDIR"""
import glob
import os
import re
import sys

STR = r'"(?:[^"\\]|\\.)*"'
CONST = re.compile(r'static const char (\w+)\[\]\s*=\s*((?:\s*' + STR + r')+)\s*;')
CALL = re.compile(r'\b(pg_exec\w*|PQexecParams|PQsendQueryParams)\(\s*[\w>.-]+\s*,\s*(\w+)\s*,'
                  r'\s*(\d+)\s*,')
# pg_lock_key_then(x, bucket, key, name, N, ...) and a pipeline's struct pg_call {name, N, p}
LOCKED = re.compile(r'\b(pg_lock_key_then)\(\s*[\w>.-]+\s*,[^;]*?,\s*(\w+)\s*,\s*(\d+)\s*,'
                    r'\s*[\w&\[\]]+\s*,\s*[\w&]+\s*\)')
PIPED = re.compile(r'\{()\s*(\w+)\s*,\s*(\d+)\s*,\s*\w+\s*\}')


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    files = sorted(f for d in ("common", "fs", "tools")
                   for f in glob.glob(os.path.join(root, d, "*.c")))
    if not files:
        sys.exit(f"no C sources under {root}")
    bad = calls = 0
    for f in files:
        s = open(f, encoding="utf-8").read()
        params = {}
        for m in CONST.finditer(s):
            body = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2)))
            params[m.group(1)] = max((int(n) for n in re.findall(r"\$(\d+)", body)), default=0)
        for m in [*CALL.finditer(s), *LOCKED.finditer(s), *PIPED.finditer(s)]:
            name, n = m.group(2), int(m.group(3))
            if name not in params:
                continue
            calls += 1
            if params[name] != n:
                line = s.count("\n", 0, m.start()) + 1
                print(f"{os.path.relpath(f, root)}:{line}: {m.group(1) or 'pg_call'}({name}, {n} parameters)"
                      f" but the statement uses ${params[name]}")
                bad += 1
    print(f"{calls} calls of SQL constants checked, {bad} with the wrong parameter count")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
