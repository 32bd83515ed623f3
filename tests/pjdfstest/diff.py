#!/usr/bin/python3
"""diff.py A B [group...]: the pjdfstest subtests that pass in run B and fail in run A.

A and B are result directories of tests/pjdfstest/run.sh (<group>.raw, `prove -v` output),
e.g. /tmp/pjdp-results/custodyfs and /tmp/pjdp-results/s3fs. Prints per group the count and
each such subtest (file #number) with what A answered. A subtest whose own step, or an
earlier step on the same node, creates a FIFO, device node, socket, symbolic link or hard link
is marked 'design' (what custodyfs refuses in inbox/, see EXCLUDED.md)."""
import os
import re
import sys

GROUPS = ["open", "mkdir", "rmdir", "unlink", "rename", "truncate", "ftruncate", "chmod",
          "utimensat", "chown", "link", "symlink", "mkfifo"]
DESIGN = re.compile(r"'(-u \S+ -g \S+ |-u \S+ )?(mkfifo|mknod|symlink|link|bind) |"
                    r"expected (fifo|symlink|block|char|socket)|got ENOSYS")


def parse(path):
    res, cur, last = {}, None, None
    for line in open(path, errors="replace"):
        m = re.match(r"^(\S+\.t) \.\.", line)
        if m:
            cur = os.path.basename(m.group(1))
            continue
        m = re.match(r"^(not ok|ok) (\d+)(.*)", line)
        if m and cur:
            last = (cur, int(m.group(2)))
            res[last] = [m.group(1) == "ok", m.group(3).strip()]
    return res


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    a, b = sys.argv[1], sys.argv[2]
    for g in sys.argv[3:] or GROUPS:
        pa, pb = os.path.join(a, g + ".raw"), os.path.join(b, g + ".raw")
        if not (os.path.exists(pa) and os.path.exists(pb)):
            continue
        ra, rb = parse(pa), parse(pb)
        lines, design = [], 0
        tainted = set()  # files where a node of a refused type was asked for: later steps cascade
        for k in sorted(ra):
            if DESIGN.search(ra[k][1]):
                tainted.add(k[0])
        for k in sorted(rb):
            if rb[k][0] and not ra.get(k, (False, ""))[0]:
                what = ra.get(k, [False, "(not run)"])[1]
                kind = "design" if DESIGN.search(what) or (k[0] in tainted and
                                                           ("ENOENT" in what or not what)) else "?"
                design += kind == "design"
                lines.append(f"  {k[0]} #{k[1]} [{kind}] {what[:160]}")
        print(f"{g}: {len(lines)} pass in B, fail in A ({design} design, {len(lines) - design} other)")
        print("\n".join(l for l in lines if "[?]" in l))


if __name__ == "__main__":
    main()
