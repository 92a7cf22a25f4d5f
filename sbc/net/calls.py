"""GET /calls on the control socket: the calls in progress, for `sbc calls`."""

import json

from twisted.web.resource import Resource

from .records import cdr_of

# The CDR fields that mean something before the call ends.
LIVE = ("id", "direction", "source_peer", "target_peer", "trunk", "caller_in", "callee_in",
        "caller_out", "callee_out", "start", "answer", "a_call_id", "b_call_id")


def live_of(call):
    """One call in progress, JSON-ready: its state and its CDR so far."""
    cdr = cdr_of(call)
    return {"state": call.state, **{name: getattr(cdr, name) for name in LIVE}}


class CallsResource(Resource):
    """Every call of `calls` (sbc.b2bua.call.Calls) in progress, oldest first."""

    isLeaf = True

    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def render_GET(self, request):
        live = sorted((live_of(c) for c in self.calls.active.values()), key=lambda c: c["start"])
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(live).encode() + b"\n"
