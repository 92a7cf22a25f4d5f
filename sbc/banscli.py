"""`sbc bans`: the running sbc's ban list, over STATE_DIR/control.sock.

    sbc bans [list]                 every active ban: address, until, why
    sbc bans add IP [--seconds N]   ban by hand (default: [admission.bans] ban_time)
    sbc bans lift IP                end a ban now

The socket speaks HTTP (sbc.net.security); sbc.control is its client.
"""

import json
import time
from urllib.parse import quote

from .control import request


def add_arguments(parser):
    parser.add_argument("action", nargs="?", default="list", choices=("list", "add", "lift"))
    parser.add_argument("ip", nargs="?", help="the source address (add, lift)")
    parser.add_argument("--seconds", type=float, help="ban length for add")


def run(args, state_dir, out, err):
    if args.action != "list" and not args.ip:
        print(f"sbc bans {args.action}: which address?", file=err)
        return 2
    target = "/bans" if args.action == "list" else f"/bans/{quote(args.ip, safe='')}"
    method = {"list": "GET", "add": "POST", "lift": "DELETE"}[args.action]
    if args.action == "add" and args.seconds is not None:
        target += f"?seconds={args.seconds:g}"
    body = request(state_dir, method, target, err)
    if body is None:
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
