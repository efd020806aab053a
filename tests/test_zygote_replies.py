"""The requester's reading of a zygote's replies, against a stand-in zygote on a socket pair (no interpreter is
started: the fast tier). Exits are reported by pid, and pids are reused: a long test run on a machine whose
pid_max is 32768 starts a child under the pid of one that ended earlier on the same connection."""

from __future__ import annotations

import json
import socket

from harness.processes.zygote import Zygote


def reply(sock: socket.socket, *messages: dict) -> None:
    sock.sendall(b"".join((json.dumps(m) + "\n").encode() for m in messages))


def test_a_child_under_a_reused_pid_is_running_until_its_own_exit_arrives():
    mine, theirs = socket.socketpair()
    with mine, theirs:
        requester = Zygote(mine, None)
        reply(theirs, {"pid": 4242})
        first = requester.fork("m", [], env={}, stdio=(0, 1, 2), session=False)
        reply(theirs, {"exit": 4242, "code": 0})
        assert first is not None and first.wait() == 0

        reply(theirs, {"exit": 4242, "code": 3})  # a child that was never waited on: its exit is kept unread
        reply(theirs, {"pid": 4242})
        second = requester.fork("m", [], env={}, stdio=(0, 1, 2), session=False)
        assert second is not None and second.poll() is None  # not the earlier child's exit
        reply(theirs, {"exit": 4242, "code": -15})
        assert second.wait() == -15 and second.poll() == -15 and first.poll() == 0

