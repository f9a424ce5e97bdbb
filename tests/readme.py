#!/usr/bin/env python3
"""Run the README's shell examples in order, as a new user would, on a fresh broker.

    python3 tests/readme.py [KINGLET_BINARY]     (default: target/release/kinglet)

Every ```sh block of README.md runs with bash (`set -e`), in order, in one new empty
directory, with the binary's directory first on PATH (for `export PATH="$PWD/target/release:$PATH"`,
which names the repository, the directory is substituted). The broker is handled the way
the README tells the reader to:

- `cargo run --release` (the quick start) starts `kinglet run` in the background, as the
  first terminal would;
- `cargo test ...` is skipped (it is what .ci/run runs anyway);
- a `kinglet run [ARGS]` line stops the broker that runs (the README says Ctrl-C) and starts
  `kinglet run ARGS` in the background; the lines before and after it run as usual;
- a block that uses `kinglet user` stops the broker first (the README says to).

The broker listens on 127.0.0.1:5222 as in the README; the script fails if that port is
taken. It checks each block's exit status and that the broker did not log an ERROR or a
panic, and prints what each block printed. Exit 0 when every block passed.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK_TIMEOUT = 120  # seconds per block: a hung example fails the run


def blocks(readme):
    """The ```sh blocks, in order."""
    out, cur = [], None
    for line in open(readme, encoding="utf-8"):
        if cur is None and line.strip() == "```sh":
            cur = []
        elif cur is not None and line.strip() == "```":
            out.append("".join(cur))
            cur = None
        elif cur is not None:
            cur.append(line)
    return out


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    def __init__(self, workdir, binary):
        self.workdir, self.binary, self.proc, self.log = workdir, binary, None, None

    def start(self, args):
        self.stop()
        self.log = open(os.path.join(self.workdir, "broker.log"), "ab")
        cmd = [self.binary, "run"] + args
        print(f"--- broker: {' '.join(cmd)} (background)", flush=True)
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while not port_open(5222):
            if self.proc.poll() is not None:
                sys.exit(f"broker exited with {self.proc.returncode}: {self.text()}")
            if time.monotonic() > deadline:
                sys.exit("broker did not listen on 127.0.0.1:5222 within 30 s")
            time.sleep(0.05)

    def stop(self):
        if self.proc is None:
            return
        print("--- broker: Ctrl-C", flush=True)
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            sys.exit("broker did not stop within 15 s of SIGINT")
        self.proc = None
        if rc != 0:
            sys.exit(f"broker exited with {rc} after Ctrl-C: {self.text()}")

    def text(self):
        path = os.path.join(self.workdir, "broker.log")
        return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""


def run_bash(script, workdir, env, label):
    print(f"--- {label}:\n{script.rstrip()}", flush=True)
    # Every block starts in the README's directory, like a terminal that never left it.
    script = 'cd "$KINGLET_README_DIR"\n' + script
    try:
        p = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        sys.exit(f"FAIL: {label} did not finish within {BLOCK_TIMEOUT} s")
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr)
    if p.returncode != 0:
        sys.exit(f"FAIL: {label} exited with {p.returncode}")


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "target/release/kinglet"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"no kinglet binary at {binary} (cargo build --release first)")
    if port_open(5222):
        sys.exit("127.0.0.1:5222 is taken; the README's broker needs it (stop what listens there)")
    bindir = os.path.dirname(binary)
    workdir = tempfile.mkdtemp(prefix="kinglet-readme-")
    env = dict(
        os.environ,
        PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
        KINGLET_README_DIR=workdir,
    )
    broker = Broker(workdir, binary)
    count = 0
    # Variables set in one block stay set in the next (one terminal): each block starts with
    # the assignments of the blocks before it.
    assignments = []
    try:
        for i, block in enumerate(blocks(os.path.join(REPO, "README.md")), 1):
            block = block.replace('"$PWD/target/release', '"' + bindir)
            prelude = "".join(assignments)
            assignments += [
                line + "\n"
                for line in block.splitlines()
                if re.match(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_]*=", line)
            ]
            if "cargo test" in block:
                print(f"--- block {i}: skipped (the test command)", flush=True)
                continue
            if "cargo run --release" in block:
                broker.start([])
                count += 1
                continue
            if re.search(r"^\s*kinglet user ", block, re.M):
                broker.stop()
            # Split at `kinglet run` lines: before, broker (re)start, after.
            part = []
            for line in block.splitlines(keepends=True):
                m = re.match(r"^\s*kinglet run\b(.*?)(#.*)?$", line)
                if m:
                    if "".join(part).strip():
                        run_bash(prelude + "".join(part), workdir, env, f"block {i}")
                    part = []
                    broker.start(m.group(1).split())
                else:
                    part.append(line)
            if "".join(part).strip():
                run_bash(prelude + "".join(part), workdir, env, f"block {i}")
            count += 1
        broker.stop()
    finally:
        if broker.proc is not None:
            broker.proc.kill()
    log = broker.text()
    if re.search(r"\bERROR\b|panicked", log):
        sys.exit(f"FAIL: the broker logged errors:\n{log}")
    print(f"README: {count} shell blocks ran in order in {workdir}; broker log clean")


if __name__ == "__main__":
    main()
