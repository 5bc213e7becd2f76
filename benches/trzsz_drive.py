#!/usr/bin/env python3
"""One trzsz transfer through a login shell's terminal, with no person at the keyboard.

    trzsz_drive.py download|upload SSH_CONFIG ALIAS REMOTE LOCAL TRZSZ_BIN [FLAGS]

download: the remote file REMOTE lands in the local directory LOCAL (under its own name).
upload:   the local file LOCAL lands in the remote directory REMOTE (under its own name).

trzsz (PyPI `trzsz`: `trzsz-svr` has the server side, `tsz` and `trz`; `trzsz-iterm2` the
client side, an iTerm2 coprocess) works like this: the server side, typed at the remote shell
prompt, prints a trigger line (`::TRZSZ:TRANSFER:S|R:VERSION:ID:PORT`); the terminal emulator
sees it and starts the client as a coprocess whose stdin is what the terminal shows and whose
stdout is typed into the terminal. This script plays the terminal emulator: it runs
`ssh -tt -e none` (a PTY on the remote, no escape character on binary data), types
`exec TRZSZ_BIN/tsz FLAGS REMOTE` (or `trz FLAGS REMOTE`), waits for the trigger, then starts
trzsz-iterm2's client with the file or directory a person would pick in iTerm2's dialog given
in advance, and relays the terminal's output to it until it exits. The shell was replaced by
the server side (`exec`), so the session then ends by itself. Exit status: the client's, or
1 when no trigger came. Needs the client side installed in the python that runs this script.
The python client does not use trzsz's TCP tunnel (only the Go trzsz-ssh does): every byte
goes through the terminal.
"""
import os
import re
import select
import shlex
import subprocess
import sys
import time

TRIGGER = re.compile(rb'::TRZSZ:TRANSFER:[SRD]:\d+\.\d+\.\d+(:\d+)?(:\d+)?')
WAIT_TRIGGER_SECONDS = 60
WAIT_SESSION_END_SECONDS = 30

# The coprocess: trzsz-iterm2's own main(), with the path a person would choose in iTerm2's
# panel given in advance (there is no iTerm2 here; its API is left unused without
# ITERM_SESSION_ID).
CLIENT = r'''
import sys
import trzsz.iterm2.main as client
mode, path, trigger = sys.argv[1:4]
if mode == "download":
    sys.argv = ["trzsz-iterm2", "--destpath", path, trigger]
else:
    client.choose_upload_paths = lambda loop, connection, directory: [path]
    sys.argv = ["trzsz-iterm2", trigger]
client.main()
'''


def main():
    if len(sys.argv) < 7 or sys.argv[1] not in ('download', 'upload'):
        sys.stderr.write(__doc__)
        return 2
    mode, config, alias, remote, local, trzsz_bin = sys.argv[1:7]
    flags = sys.argv[7:]
    program = 'tsz' if mode == 'download' else 'trz'
    line = 'exec ' + ' '.join(shlex.quote(word) for word in [os.path.join(trzsz_bin, program), *flags, remote])

    ssh = subprocess.Popen(['ssh', '-tt', '-e', 'none', '-F', config, alias],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    out = ssh.stdout.fileno()
    ssh.stdin.write(line.encode() + b'\r')
    ssh.stdin.flush()

    seen = b''
    deadline = time.monotonic() + WAIT_TRIGGER_SECONDS
    match = None
    while match is None:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([out], [], [], max(0, left))
        if not ready:
            break
        data = os.read(out, 1 << 16)
        if not data:
            break
        seen += data
        match = TRIGGER.search(seen)
    if match is None:
        sys.stderr.write('trzsz_drive: no trzsz trigger from the terminal; it showed:\n'
                         + seen[-2000:].decode('utf-8', 'replace') + '\n')
        ssh.kill()
        ssh.wait()
        return 1

    client = subprocess.Popen([sys.executable, '-c', CLIENT, mode, local, match.group(0).decode()],
                              stdin=subprocess.PIPE, stdout=ssh.stdin, bufsize=0)
    rest = seen[match.end():]
    try:
        if rest:
            client.stdin.write(rest)
        while client.poll() is None:
            ready, _, _ = select.select([out], [], [], 0.2)
            if not ready:
                continue
            data = os.read(out, 1 << 20)
            if not data:
                break
            client.stdin.write(data)
    except BrokenPipeError:
        pass
    try:
        client.stdin.close()
    except BrokenPipeError:
        pass
    status = client.wait()

    # The server side ends and, as it replaced the shell, so does the session: drain it.
    deadline = time.monotonic() + WAIT_SESSION_END_SECONDS
    while ssh.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([out], [], [], 0.2)
        if ready and not os.read(out, 1 << 20):
            break
    try:
        ssh.stdin.close()
    except BrokenPipeError:
        pass
    try:
        ssh.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        ssh.kill()
        ssh.wait()
    return status


if __name__ == '__main__':
    sys.exit(main())
