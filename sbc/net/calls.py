"""GET /calls on the control socket: the calls in progress, for `sbc calls`."""

import json

from twisted.web.resource import Resource

from .records import direction_of


def live_of(call):
    """One call in progress, JSON-ready: who, what numbers, since when."""
    direction, trunk = direction_of(call)
    target = call.target_peer
    return {"id": call.id, "state": call.state, "direction": direction,
            "source_peer": call.source.name, "target_peer": target.name if target else "",
            "trunk": trunk, "caller_in": call.caller_in, "callee_in": call.callee_in,
            "caller_out": call.caller_out, "callee_out": call.callee_out,
            "start": call.start, "answer": call.answer, "a_call_id": call.a.call_id,
            "b_call_id": call.b.call_id if call.b is not None else ""}


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
