"""`sbc bans`: the running sbc's ban list, over STATE_DIR/control.sock.

    sbc bans [list]                 every active ban: address, until, why
    sbc bans add IP [--seconds N]   ban by hand (default: [admission.bans] ban_time)
    sbc bans lift IP                end a ban now

The socket speaks HTTP (sbc.net.security); this module is its client, with
the standard library only so the command starts fast.
"""

import http.client
import json
import socket
import time
from urllib.parse import quote

SOCKET = "control.sock"


def add_arguments(parser):
    parser.add_argument("action", nargs="?", default="list", choices=("list", "add", "lift"))
    parser.add_argument("ip", nargs="?", help="the source address (add, lift)")
    parser.add_argument("--seconds", type=float, help="ban length for add")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def run(args, state_dir, out, err):
    if args.action != "list" and not args.ip:
        print(f"sbc bans {args.action}: which address?", file=err)
        return 2
    path = f"{state_dir}/{SOCKET}"
    target = "/bans" if args.action == "list" else f"/bans/{quote(args.ip, safe='')}"
    method = {"list": "GET", "add": "POST", "lift": "DELETE"}[args.action]
    if args.action == "add" and args.seconds is not None:
        target += f"?seconds={args.seconds:g}"
    conn = _UnixConnection(path)
    try:
        conn.request(method, target)
        answer = conn.getresponse()
        body = answer.read().decode()
    except OSError as e:
        print(f"cannot reach the running sbc at {path}: {e}", file=err)
        return 1
    finally:
        conn.close()
    if answer.status != 200:
        print(body.strip(), file=err)
        return 1
    if args.action != "list":
        print(body.strip(), file=out)
        return 0
    bans = json.loads(body)
    if not bans:
        print("no active bans", file=out)
        return 0
    print(f"{'address':<40} {'until (UTC)':<20} why", file=out)
    for ban in sorted(bans, key=lambda b: b["until"]):
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ban["until"]))
        detail = f" ({ban['detail']})" if ban["detail"] else ""
        print(f"{ban['ip']:<40} {until:<20} {ban['why']}{detail}", file=out)
    return 0
