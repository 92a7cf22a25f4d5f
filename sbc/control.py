"""The client of STATE_DIR/control.sock, the running sbc's control socket.

It speaks HTTP over a Unix socket (served by sbc.net.security); `sbc bans`
and `sbc calls` use it. Standard library only, so the commands start fast.
"""

import http.client
import socket

SOCKET = "control.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def request(state_dir, method, target, err):
    """The body text of a 200 answer to one request; None after printing to
    `err` why there is none (the running sbc cannot be reached, or said no)."""
    path = f"{state_dir}/{SOCKET}"
    conn = _UnixConnection(path)
    try:
        conn.request(method, target)
        answer = conn.getresponse()
        status, body = answer.status, answer.read().decode()
    except OSError as e:
        print(f"cannot reach the running sbc at {path}: {e}", file=err)
        return None
    finally:
        conn.close()
    if status != 200:
        print(body.strip(), file=err)
        return None
    return body
