"""The reactor `sbc run` installs: Twisted's epoll reactor, less a log context per event.

Twisted's epoll reactor hands each ready descriptor to its handler through
twisted.python.log.callWithLogger, which asks the descriptor for its log
prefix and pushes a logging context around the call: about 2 µs per event,
and a B2BUA under load wakes up for nearly every datagram (14 per call).
Here the handler is called directly. The context only names the "system"
of legacy twisted.python.log messages; sbc logs through twisted.logger with
namespaces of its own. What the context's wrapper also did is kept: an
exception escaping the handler is logged, never raised out of the loop.

`after_round(f)` runs f once every descriptor of the current round has been
handled, before the loop sleeps again: under load one round reads many
datagrams, and work that only has to be done before sleeping is then done
once for all of them: arming the SIP timer, and sending the round's UDP
datagrams back to back (sbc.net.sip).
"""

from twisted.logger import Logger

log = Logger(namespace="sbc.loop")

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # no epoll (not Linux): Twisted's default reactor stays
    EPollReactor = None


if EPollReactor is not None:
    class Reactor(EPollReactor):
        def __init__(self):
            super().__init__()
            self._round = None  # while handlers run: what runs after them

        def after_round(self, f):
            """Run f() once this round's handlers are done; False (nothing
            queued) outside a round: the caller runs it now."""
            if self._round is None:
                return False
            self._round.append(f)
            return True

        def doPoll(self, timeout):
            """Wait up to `timeout` seconds (None: until something is ready),
            then hand every ready descriptor its events."""
            try:
                # At most one event per descriptor we watch, as Twisted asks.
                ready = self._poller.poll(-1 if timeout is None else timeout,
                                          len(self._selectables))
            except InterruptedError:
                return  # a signal: the main loop comes round again
            selectables, handle = self._selectables, self._doReadOrWrite
            after = self._round = []
            try:
                for fd, event in ready:
                    selectable = selectables.get(fd)
                    if selectable is None:
                        continue  # removed by an earlier handler of this round
                    try:
                        handle(selectable, fd, event)
                    except KeyboardInterrupt:
                        raise
                    except BaseException:
                        log.failure("event loop: {selectable!r}", selectable=selectable)
            finally:
                self._round = None
                for f in after:
                    try:
                        f()
                    except Exception:  # noqa: BLE001 - a bug in one never stops the loop
                        log.failure("event loop: after the round: {f!r}", f=f)

        doIteration = doPoll


def install():
    """Install the reactor before anything imports twisted.internet.reactor;
    returns it, or None where Twisted's default stays (no epoll, or a reactor
    already installed)."""
    if EPollReactor is None:
        return None
    from twisted.internet.error import ReactorAlreadyInstalledError
    from twisted.internet.main import installReactor
    reactor = Reactor()
    try:
        installReactor(reactor)
    except ReactorAlreadyInstalledError:
        return None
    return reactor
