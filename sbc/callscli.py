"""`sbc calls`: the running sbc's calls in progress, over STATE_DIR/control.sock.

    sbc calls [--format table|json]

The table has one line per call, oldest first: when it started (UTC), its
state, how long it has been answered, the peers it goes from and to, and the
numbers as the source sent them and as the target got them.
"""

import json
import time

from .control import request


def add_arguments(parser):
    parser.add_argument("--format", choices=("table", "json"), default="table")


def _numbers(given, sent):
    return given if not sent or sent == given else f"{given} -> {sent}"


def format_table(calls, now):
    """The table's lines for `calls` (the JSON /calls gives) at time `now`."""
    lines = [f"{'started (UTC)':<20} {'state':<10} {'answered':>9}  {'from -> to':<28} "
             "caller / callee"]
    for c in calls:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c["start"]))
        answered = "-" if c["answer"] is None else f"{max(0, int(now - c['answer']))} s"
        peers = f"{c['source_peer']} -> {c['target_peer'] or '?'}"
        numbers = (f"{_numbers(c['caller_in'], c['caller_out'])} / "
                   f"{_numbers(c['callee_in'], c['callee_out'])}")
        lines.append(f"{started:<20} {c['state']:<10} {answered:>9}  {peers:<28} {numbers}")
    lines.append(f"{len(calls)} call{'' if len(calls) == 1 else 's'} in progress")
    return lines


def run(args, state_dir, out, err):
    body = request(state_dir, "GET", "/calls", err)
    if body is None:
        return 1
    calls = json.loads(body)
    if args.format == "json":
        print(json.dumps(calls, indent=2), file=out)
        return 0
    for line in format_table(calls, time.time()):
        print(line, file=out)
    return 0
