"""The system call sandbox of mount-helpers/custodyfs@.service.in, set up as systemd does it,
without systemd (tests/integration/test_unit_sandbox.py).

Library (imported by the test):
  unit_settings(path)       the unit's [Service] assignments, {key: [value, ...]} in file order
  sandbox_spec(settings, drop=())  what systemd would install for them, as a JSON-able dict:
                            the allowed system calls (SystemCallFilter=, its @groups expanded
                            with `systemd-analyze syscall-filter`, nested groups too; syscalls
                            in `drop` -- names or @groups -- taken out), the errno of the rest
                            (SystemCallErrorNumber=), the address families (RestrictAddress
                            Families=) and the boolean restrictions
Launcher (the daemon's wrapper):
  /usr/bin/python3 unit_sandbox.py SPEC.json CMD [ARG...]
      sets no_new_privs, loads the spec's seccomp filters (python3-seccomp) and execs CMD
      (with $WATCHDOG_PID set to its pid when $WATCHDOG_USEC is set, as systemd does).

What is reproduced, as systemd 252 (Debian 12) implements it in src/shared/seccomp-util.c and
src/core/execute.c, each as a filter of its own (the kernel runs them all; an ERRNO from any
of them wins over ALLOW):
  SystemCallFilter= + SystemCallErrorNumber=  default ERRNO(errno), ALLOW for each listed
      syscall this libseccomp knows on the native architecture (systemd ignores the others)
  SystemCallArchitectures=native  the filters are for the native architecture only (a syscall
      of another ABI is killed: libseccomp's bad-arch action)
  RestrictAddressFamilies=  socket() with a family outside the list: EAFNOSUPPORT (only
      socket(): socketpair() and descriptors passed in are not restricted)
  MemoryDenyWriteExecute=yes  mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect with
      PROT_EXEC, shmat with SHM_EXEC: EPERM
  RestrictNamespaces=yes  unshare/clone with a CLONE_NEW* flag and setns: EPERM; clone3:
      ENOSYS (its flags are in memory a filter cannot read; glibc then falls back to clone)
  RestrictRealtime=yes  sched_setscheduler to SCHED_FIFO/RR/DEADLINE (or with flags): EPERM
  RestrictSUIDSGID=yes  chmod/fchmod/fchmodat/open/openat/creat setting S_ISUID/S_ISGID: EPERM
  LockPersonality=yes  personality() with anything but PER_LINUX (the 0xffffffff query too): EPERM
  NoNewPrivileges=yes  prctl(PR_SET_NO_NEW_PRIVS)
  CapabilityBoundingSet=  every other capability dropped from the bounding set (PR_CAPBSET_DROP),
      so root's exec gets only those
Not reproduced: DevicePolicy=, UMask=, the cgroup, the journal (stderr is the test's log)."""
import errno
import json
import os
import subprocess
import sys

_BOOL_KEYS = ("NoNewPrivileges", "MemoryDenyWriteExecute", "RestrictNamespaces",
              "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality")


def unit_settings(path):
    """{key: [value, ...]} of the [Service] section of the unit file at path (comments and
    other sections skipped; no line continuations are used in the unit)."""
    out = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if section != "Service" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _list_setting(values):
    """A list setting as systemd reads it: assignments add up, an empty one resets."""
    items = []
    for v in values:
        if not v:
            items = []
        else:
            items += v.split()
    return items


def _bool(values):
    return bool(values) and values[-1].lower() in ("yes", "true", "1", "on")


# <linux/capability.h> numbers of the capabilities a unit may name here
_CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
         "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10,
         "CAP_IPC_LOCK": 14, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_SYS_RESOURCE": 24}

_group_cache = {}


def expand_group(group, _seen=None):
    """The syscalls of @group per `systemd-analyze syscall-filter` (offline), nested groups
    expanded."""
    if group in _group_cache:
        return _group_cache[group]
    seen = set(_seen or ()) | {group}
    p = subprocess.run(["systemd-analyze", "syscall-filter", group], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"systemd-analyze syscall-filter {group}: {p.stderr.strip()}")
    names = set()
    lines = p.stdout.splitlines()
    if not lines or lines[0].strip() != group:
        raise RuntimeError(f"unexpected systemd-analyze output for {group}: {p.stdout[:200]!r}")
    for line in lines[1:]:
        tok = line.strip()
        if not tok or tok.startswith("#"):
            continue
        if not line[0].isspace():  # the next group's header: only one was asked for
            break
        if tok.startswith("@"):
            if tok in seen:
                raise RuntimeError(f"group cycle at {tok}")
            names |= expand_group(tok, seen)
        else:
            names.add(tok)
    _group_cache[group] = frozenset(names)
    return _group_cache[group]


def expand(items):
    names = set()
    for it in items:
        if ":" in it:  # name:errno is not used by the unit; refuse rather than misread it
            raise ValueError(f"SystemCallFilter item {it!r}: per-call errno not supported here")
        names |= expand_group(it) if it.startswith("@") else {it}
    return names


def sandbox_spec(settings, drop=()):
    """The seccomp set-up systemd derives from the unit's settings (see the module doc);
    `drop`: syscall names or @groups removed from the allow list (a deliberately narrowed
    filter)."""
    items = _list_setting(settings.get("SystemCallFilter", []))
    if not items:
        raise ValueError("the unit has no SystemCallFilter=")
    if items[0].startswith("~"):
        raise ValueError("a deny-list SystemCallFilter=~ is not what this harness models")
    # systemd adds @default to every allow list (load-fragment.c, config_parse_syscall_filter)
    allow = expand(["@default"] + items) - expand(drop)
    errno_name = (settings.get("SystemCallErrorNumber") or ["EPERM"])[-1]
    if not hasattr(errno, errno_name):
        raise ValueError(f"SystemCallErrorNumber={errno_name}: unknown errno")
    archs = (settings.get("SystemCallArchitectures") or ["native"])[-1]
    if archs.split() != ["native"]:
        raise ValueError(f"SystemCallArchitectures={archs}: only 'native' is modelled")
    caps = _list_setting(settings.get("CapabilityBoundingSet", []))
    if caps and caps[0].startswith("~"):
        raise ValueError("a deny-list CapabilityBoundingSet=~ is not what this harness models")
    spec = {"allow": sorted(allow), "errno": errno_name, "capabilities": caps,
            "address_families": _list_setting(settings.get("RestrictAddressFamilies", []))}
    for k in _BOOL_KEYS:
        spec[k] = _bool(settings.get(k, []))
    return spec


# --------------------------------------------------------------------------- the launcher

def _filters(spec):
    """The list of seccomp.SyscallFilter to load, in systemd's order (the syscall filter is
    the last one, closest to execve)."""
    import seccomp
    from seccomp import ALLOW, EQ, ERRNO, GT, LT, MASKED_EQ, NE, Arch, Arg, SyscallFilter

    def known(name):
        return seccomp.resolve_syscall(Arch.NATIVE, name) >= 0

    def permissive():  # systemd's filters for one restriction: all else allowed
        return SyscallFilter(defaction=ALLOW)

    out = []
    fams = spec["address_families"]
    if fams:
        import socket
        nums = sorted(int(getattr(socket, a)) for a in fams)
        f = permissive()
        eaf = ERRNO(errno.EAFNOSUPPORT)
        f.add_rule_exactly(eaf, "socket", Arg(0, LT, nums[0]))
        f.add_rule_exactly(eaf, "socket", Arg(0, GT, nums[-1]))
        for af in range(nums[0] + 1, nums[-1]):
            if af not in nums:
                f.add_rule_exactly(eaf, "socket", Arg(0, EQ, af))
        out.append(f)
    if spec["MemoryDenyWriteExecute"]:
        prot_exec, prot_write, shm_exec = 0x4, 0x2, 0o100000
        f = permissive()
        eperm = ERRNO(errno.EPERM)
        f.add_rule_exactly(eperm, "mmap", Arg(2, MASKED_EQ, prot_exec | prot_write,
                                              prot_exec | prot_write))
        f.add_rule_exactly(eperm, "mprotect", Arg(2, MASKED_EQ, prot_exec, prot_exec))
        if known("pkey_mprotect"):
            f.add_rule_exactly(eperm, "pkey_mprotect", Arg(2, MASKED_EQ, prot_exec, prot_exec))
        f.add_rule_exactly(eperm, "shmat", Arg(2, MASKED_EQ, shm_exec, shm_exec))
        out.append(f)
    if spec["RestrictNamespaces"]:
        # CLONE_NEWNS UTS IPC USER PID NET CGROUP (systemd 252's list: no CLONE_NEWTIME)
        clone_new = 0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 \
            | 0x40000000 | 0x02000000
        f = permissive()
        eperm = ERRNO(errno.EPERM)
        for bit in range(32):
            flag = 1 << bit
            if clone_new & flag:
                f.add_rule_exactly(eperm, "unshare", Arg(0, MASKED_EQ, flag, flag))
                f.add_rule_exactly(eperm, "clone", Arg(0, MASKED_EQ, flag, flag))  # x86-64
        f.add_rule_exactly(eperm, "setns")
        if known("clone3"):
            f.add_rule_exactly(ERRNO(errno.ENOSYS), "clone3")
        out.append(f)
    if spec["RestrictRealtime"]:
        # allowed: SCHED_OTHER 0, SCHED_BATCH 3, SCHED_IDLE 5 (the highest); refused: the
        # others below it (FIFO 1, RR 2, 4) and anything above (DEADLINE 6, RESET_ON_FORK)
        f = permissive()
        eperm = ERRNO(errno.EPERM)
        for p in (1, 2, 4):
            f.add_rule_exactly(eperm, "sched_setscheduler", Arg(1, EQ, p))
        f.add_rule_exactly(eperm, "sched_setscheduler", Arg(1, GT, 5))
        out.append(f)
    if spec["RestrictSUIDSGID"]:
        o_creat = os.O_CREAT
        f = permissive()
        eperm = ERRNO(errno.EPERM)
        for m in (0o4000, 0o2000):
            f.add_rule_exactly(eperm, "chmod", Arg(1, MASKED_EQ, m, m))
            f.add_rule_exactly(eperm, "fchmod", Arg(1, MASKED_EQ, m, m))
            f.add_rule_exactly(eperm, "fchmodat", Arg(2, MASKED_EQ, m, m))
            f.add_rule_exactly(eperm, "creat", Arg(1, MASKED_EQ, m, m))
            f.add_rule_exactly(eperm, "open", Arg(1, MASKED_EQ, o_creat, o_creat),
                               Arg(2, MASKED_EQ, m, m))
            f.add_rule_exactly(eperm, "openat", Arg(2, MASKED_EQ, o_creat, o_creat),
                               Arg(3, MASKED_EQ, m, m))
        out.append(f)
    if spec["LockPersonality"]:
        f = permissive()
        per_linux = 0  # the personality systemd locks (the one the service starts with)
        f.add_rule_exactly(ERRNO(errno.EPERM), "personality", Arg(0, NE, per_linux))
        out.append(f)
    # the system call filter: everything else fails with SystemCallErrorNumber=
    f = SyscallFilter(defaction=ERRNO(getattr(errno, spec["errno"])))
    for name in spec["allow"]:
        if not known(name):
            continue  # systemd: "System call %s is not known, ignoring."
        try:
            f.add_rule_exactly(ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # a syscall of another ABI (mmap2, _llseek ...): systemd ignores it too
    out.append(f)
    return out


def main(argv):
    if len(argv) < 3:
        print("usage: unit_sandbox.py SPEC.json CMD [ARG...]", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    filters = _filters(spec)  # built before any is loaded
    if not spec["NoNewPrivileges"]:
        print("unit_sandbox: the unit sets NoNewPrivileges=yes; this launcher always does",
              file=sys.stderr)
        return 2
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if spec["capabilities"]:
        keep = {_CAPS[c] for c in spec["capabilities"]}  # KeyError: a name to add to _CAPS
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
        for cap in range(last + 1):
            if cap not in keep and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                print(f"unit_sandbox: PR_CAPBSET_DROP {cap}: {os.strerror(ctypes.get_errno())}",
                      file=sys.stderr)
                return 1
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        print(f"unit_sandbox: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}",
              file=sys.stderr)
        return 1
    for f in filters:
        f.load()
    if "WATCHDOG_USEC" in os.environ:  # systemd names the main process (the exec keeps the pid)
        os.environ["WATCHDOG_PID"] = str(os.getpid())
    os.execv(argv[2], argv[2:])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
