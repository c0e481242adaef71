"""What a killed bench/hollow.py leaves behind, removed: started by it, outliving it.

    python bench/hollow_reaper.py DIR...   (started by bench/hollow.py only)

It reads lines on stdin: `pid N` for each process to kill should the run end without saying
so (etcd), and `done` when the run cleaned up after itself. At EOF without `done` (the run was
SIGKILLed, or gave up from its hard deadline) it SIGKILLs those processes and removes the
directories. The workers need no reaper: the kernel kills them with their parent
(PR_SET_PDEATHSIG, bench/hollow_worker.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C to the run is the run's to handle
    pids: list[int] = []
    for line in sys.stdin:
        word, _, value = line.strip().partition(" ")
        if word == "done":
            return 0
        if word == "pid":
            pids.append(int(value))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for directory in argv[1:]:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
