"""Call events from the B2BUA, turned into metrics and CDRs (the shell side)."""

from twisted.logger import Logger

from ..b2bua.call import Attempt, AttemptFailed, CallAnswered, CallEnded
from ..cdr import CDR
from ..sip.stack import Failed


def direction_of(call):
    """(direction, trunk) of a call: inbound from a trunk, outbound to one."""
    source = call.source
    target = call.target_peer
    if getattr(source, "kind", "") == "trunk":
        return "inbound", source.name
    if target is not None and getattr(target, "kind", "") == "trunk":
        return "outbound", target.name
    return "internal", ""


def cdr_of(call):
    direction, trunk = direction_of(call)
    target = call.target_peer
    return CDR(
        id=call.id, start=call.start, ringing=call.ringing, answer=call.answer, end=call.end,
        direction=direction, source_peer=call.source.name,
        target_peer=target.name if target is not None else "", trunk=trunk,
        caller_in=call.caller_in, callee_in=call.callee_in, caller_out=call.caller_out,
        callee_out=call.callee_out, final_code=call.final_code or 0,
        hangup_by=call.hangup_by or "sbc", reason=call.reason or "error",
        attempts=call.attempts, a_call_id=call.a.call_id,
        b_call_id=call.b.call_id if call.b is not None else "")


class Recorder:
    """Callable given every non-wire effect the stack returns."""

    log = Logger(namespace="sbc.calls")

    def __init__(self, metrics, store=None, debug=False):
        self.metrics = metrics.calls
        self.store = store
        self.debug = debug  # a line per call; not even built below debug level

    def __call__(self, effect):
        kind = type(effect)
        if kind is Attempt:
            self.metrics.attempt(effect.target.peer.name)
        elif kind is AttemptFailed:
            self.metrics.response(effect.target.peer.name, effect.status)
        elif kind is CallAnswered:
            call = effect.call
            if call.target_peer is not None:
                self.metrics.response(call.target_peer.name, 200)
        elif kind is CallEnded:
            self._ended(effect.call)
        elif kind is Failed:
            self.log.error("call handling error: {error!r}", error=effect.error)

    def _ended(self, call):
        cdr = cdr_of(call)
        self.metrics.ended(cdr.trunk, cdr.direction, cdr.answered, cdr.pdd, cdr.duration)
        quality = call.media.quality if call.media is not None else None
        if quality is not None:
            self.metrics.media_quality(cdr.trunk, *quality)
        if self.debug:
            self.log.debug("call {id} {direction} {src}->{dst} {callee} {code} {reason} "
                           "{duration:.1f}s", id=cdr.id, direction=cdr.direction,
                           src=cdr.source_peer, dst=cdr.target_peer,
                           callee=cdr.callee_out or cdr.callee_in, code=cdr.final_code,
                           reason=cdr.reason, duration=cdr.duration)
        if self.store is not None:
            self.store.write(cdr)
