"""Run a command under the sandbox of conf/chatd.service.in, as far as it can
be rebuilt without systemd as PID 1 (the test machines have none):

* SystemCallFilter=: the unit's own lines, expanded by `systemd-analyze
  syscall-filter`, loaded with libseccomp (ctypes, no extra package). Any
  other system call KILLS the process (SIGSYS), where the unit says EPERM:
  stricter, so that a call chatd needs and the unit forbids cannot pass
  unnoticed;
* NoNewPrivileges=: set by libseccomp before loading the filter;
* ProcSubset=pid, ProtectProc=invisible: a private mount namespace (unshare)
  with /proc mounted subset=pid,hidepid=invisible;
* DynamicUser=: an unprivileged uid and gid (nobody's, 65534) with no
  supplementary groups and no capabilities (setpriv). This matters: run as
  root, SQLite calls fchown() on its files, which the filter forbids.

Not rebuilt here: the other Protect* mounts, the cgroup limits. Each step execs the next, so the pid the caller
sees is chatd's own and signals reach it directly.

    argv = unit_sandbox.command(UNIT_FILE) + ["/path/to/chatd", "-c", "x.toml"]

Run as a script (by command() itself): unit_sandbox.py exec SYSCALLS... -- CMD...
"""

import ctypes
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def unit_values(unit_path, key):
    """The values of key= in a unit file, in order."""
    out = []
    with open(unit_path) as f:
        for line in f:
            m = re.match(r"\s*%s=(.*)$" % re.escape(key), line)
            if m:
                out.append(m.group(1).strip())
    return out


def filter_lines(unit_path):
    return unit_values(unit_path, "SystemCallFilter")


def syscall_groups():
    """{"@group": [names and @subgroups]} from systemd-analyze (works offline)."""
    text = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True,
                          check=True).stdout
    groups, cur = {}, None
    for line in text.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def expand(items, groups, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for it in items:
        if it.startswith("@"):
            if it in seen:
                continue
            seen.add(it)
            if it not in groups:
                raise ValueError("unknown syscall group %s" % it)
            out |= expand(groups[it], groups, seen)
        else:
            out.add(it)
    return out


def allowed_syscalls(unit_path):
    """What systemd lets through: the allow lines' union, less every ~deny line."""
    groups = syscall_groups()
    allow, deny = set(), set()
    for value in filter_lines(unit_path):
        if value.startswith("~"):
            deny |= expand(value[1:].split(), groups)
        else:
            allow |= expand(value.split(), groups)
    if not allow:
        raise ValueError("%s has no SystemCallFilter allow list" % unit_path)
    return sorted(allow - deny)


NOBODY = 65534
_SCRIPT = []


def script_copy():
    """This file, where the unprivileged user can read it: the checkout may
    sit under a directory only root can enter (/root on a CI machine)."""
    if not _SCRIPT:
        import atexit
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="chatd-sandbox-")
        os.chmod(d, 0o755)
        atexit.register(shutil.rmtree, d, True)
        dst = os.path.join(d, "unit_sandbox.py")
        shutil.copyfile(os.path.abspath(__file__), dst)
        os.chmod(dst, 0o644)
        _SCRIPT.append(dst)
    return _SCRIPT[0]


def command(unit_path, uid=NOBODY):
    """argv prefix that runs the rest of argv under the unit's sandbox, as uid
    (which must be able to read the config and write the state directory)."""
    calls = allowed_syscalls(unit_path)
    user = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all"]
    inner = ["/usr/bin/python3", script_copy(), "exec"] + calls + ["--"]
    opts = []
    if "pid" in unit_values(unit_path, "ProcSubset"):
        opts.append("subset=pid")
    if "invisible" in unit_values(unit_path, "ProtectProc"):
        opts.append("hidepid=invisible")
    script = 'mount -t proc %s proc /proc && exec "$@"' % ("-o " + ",".join(opts) if opts else "")
    return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh"] + user + inner


SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000


def seccomp_exec(calls, argv):
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    if not ctx:
        sys.exit("seccomp_init failed")
    for name in calls:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue            # not a system call on this architecture (systemd skips it too)
        lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
    if lib.seccomp_load(ctx) != 0:
        sys.exit("seccomp_load failed")
    os.execv(argv[0], argv)


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "exec" or "--" not in sys.argv:
        sys.exit(__doc__)
    sep = sys.argv.index("--")
    seccomp_exec(sys.argv[2:sep], sys.argv[sep + 1:])
