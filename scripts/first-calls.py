#!/usr/bin/env python3
"""Record which functions of a program run, in the order they first run.

    first-calls.py --out ORDER --ready HOST:PORT [--idle S] [--then CMD] [--settle S] -- PROGRAM ARGS...

Starts PROGRAM under ptrace with a breakpoint (int3) on the first byte of
every function its symbol table names, natively, on this machine's CPU
(unlike an emulator, it takes the code paths the real CPU selects). Each
breakpoint is removed when first hit, so every function costs one stop
however often it runs. Once HOST:PORT accepts connections it leaves the
program idle for a while (--idle), runs CMD (a shell command: the
workload), waits S seconds, kills the program and writes the symbol names of
the functions that ran, first-run order, one per line: a linker's symbol
ordering file (lld `--symbol-ordering-file`). Fails if the program never
listens, CMD fails or the program ends before it is killed.

Linux x86_64 only. Used by scripts/release-build.
"""

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

PTRACE_TRACEME, PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS = 0, 7, 12, 13
PTRACE_DETACH, PTRACE_SETOPTIONS = 17, 0x4200
# Threads, and child processes until they exec: a child made by vfork or
# posix_spawn runs the program's code in its memory before it execs.
PTRACE_O_TRACEFORK, PTRACE_O_TRACEVFORK, PTRACE_O_TRACECLONE = 0x2, 0x4, 0x8
PTRACE_O_TRACEEXEC, PTRACE_O_EXITKILL = 0x10, 0x100000
PTRACE_EVENT_EXEC = 4
WALL = 0x40000000
INT3 = b"\xcc"

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


class Regs(ctypes.Structure):
    """struct user_regs_struct (x86_64)."""

    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in (
            "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax "
            "rip cs eflags rsp ss fs_base gs_base ds es fs gs"
        ).split()
    ]


def ptrace(request, pid, addr=0, data=0):
    if libc.ptrace(request, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request}, {pid}): {os.strerror(err)}")


def functions(program):
    """Function symbols of `program`: {address: [names]} and {address: size}."""
    out = subprocess.run(
        ["nm", "--defined-only", "-S", program], check=True, capture_output=True, text=True
    ).stdout
    names, sizes = {}, {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:  # no size (hand-written assembly)
            parts.insert(1, "0")
        if len(parts) != 4 or parts[2] not in "tTwWiI":
            continue
        addr = int(parts[0], 16)
        names.setdefault(addr, []).append(parts[3])
        sizes[addr] = max(sizes.get(addr, 0), int(parts[1], 16))
    return names, sizes


def load_base(pid, program):
    """Where the kernel mapped `program` (a position-independent executable)."""
    real = os.path.realpath(program)
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    raise SystemExit(f"first-calls: {program} is not mapped in process {pid}")


def workload(args, pid):
    """Waits for the program, runs CMD, then kills the program. Runs in a
    process of its own: the tracer's wait for any tracee would otherwise
    take CMD's exit status too. Its exit status says how it went."""
    host, port = args.ready.rsplit(":", 1)
    deadline = time.monotonic() + args.timeout
    status = 0
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                print(f"first-calls: {args.ready} never answered", file=sys.stderr)
                status = 1
                break
            time.sleep(0.05)
    if status == 0:
        time.sleep(args.idle)
        if args.then:
            run = subprocess.run(args.then, shell=True, check=False, timeout=args.timeout)
            if run.returncode != 0:
                print(f"first-calls: the workload failed ({run.returncode})", file=sys.stderr)
                status = 1
    if status == 0:
        time.sleep(args.settle)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        print("first-calls: the program ended before the workload did", file=sys.stderr)
        status = 1
    return status


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready", required=True, help="HOST:PORT the program listens on")
    parser.add_argument("--then", help="shell command run once the program is ready")
    parser.add_argument("--idle", type=float, default=0.0, help="seconds idle before CMD")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after CMD")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not command:
        parser.error("no program given")
    names, sizes = functions(command[0])

    pid = os.fork()
    if pid == 0:
        ptrace(PTRACE_TRACEME, 0)
        os.execv(command[0], command)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSTOPPED(status):
        raise SystemExit("first-calls: the program did not stop at exec")
    options = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE
    ptrace(PTRACE_SETOPTIONS, pid, 0, options | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)
    base = load_base(pid, command[0])
    mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)
    original = {}
    for addr in names:
        original[base + addr] = os.pread(mem, 1, base + addr)
        os.pwrite(mem, INT3, base + addr)
    os.close(mem)

    helper = os.fork()
    if helper == 0:
        os._exit(workload(args, pid))
    helper_status = None
    first, seen = [], set()  # addresses (relative to the binary), first-run order
    regs = Regs()
    live = {pid}
    ptrace(PTRACE_CONT, pid)
    while live:
        tid, status = os.waitpid(-1, WALL)
        if tid == helper:
            helper_status = status
            continue
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            live.discard(tid)
            continue
        live.add(tid)
        sig, event = os.WSTOPSIG(status), status >> 16
        deliver = 0
        if event == PTRACE_EVENT_EXEC and tid != pid:
            live.discard(tid)  # a child became another program
            ptrace(PTRACE_DETACH, tid)
            continue
        if sig == signal.SIGTRAP and event == 0:
            ptrace(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))
            addr = regs.rip - 1
            if addr in original:
                # The memory of the thread that stopped: a forked child's
                # is a copy, still with every breakpoint.
                with open(f"/proc/{tid}/mem", "r+b", buffering=0) as m:
                    m.seek(addr)
                    m.write(original[addr])
                if addr not in seen:
                    seen.add(addr)
                    first.append(addr - base)
                regs.rip = addr  # run the real first byte
                ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))
            else:
                deliver = sig
        elif sig not in (signal.SIGTRAP, signal.SIGSTOP):
            deliver = sig
        try:
            ptrace(PTRACE_CONT, tid, 0, deliver)
        except OSError:
            live.discard(tid)  # killed meanwhile
    if helper_status is None:
        _, helper_status = os.waitpid(helper, 0)
    if not os.WIFEXITED(helper_status) or os.WEXITSTATUS(helper_status) != 0:
        raise SystemExit(1)

    with open(args.out, "w") as out:
        for addr in first:
            for name in names[addr]:
                out.write(name + "\n")
    code = sum(sizes[a] for a in first)
    print(
        f"first-calls: {len(first)} of {len(names)} functions ran, "
        f"{code / 1024:.0f} KiB of code -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
