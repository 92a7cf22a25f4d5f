"""Even/odd port pairs for the relay: RTP on the even port, RTCP on the next (RFC 3550 §11).

Pairs are handed out oldest-released first, so a port that just carried a
call rests as long as possible before the next one; late packets of the old
call then find no socket rather than a new call's.
"""

from collections import deque

from ..errors import ConfigError


class PortPool:
    """Port pairs in [port_min, port_max]; allocate() is None when none is free."""

    def __init__(self, port_min, port_max):
        if not 0 < port_min <= port_max <= 65535:
            raise ConfigError(f"port range {port_min}-{port_max} is not within 1-65535 "
                              "or is empty", key="media.port_min")
        first = port_min + (port_min & 1)   # RTP ports are even
        if first + 1 > port_max:
            raise ConfigError(f"port range {port_min}-{port_max} holds no even/odd pair",
                              key="media.port_max")
        self.port_min = port_min
        self.port_max = port_max
        self._free = deque(range(first, port_max, 2))  # pair (p, p+1) needs p+1 <= port_max
        self._used = set()
        self.size = len(self._free)
        self.exhausted = 0  # allocations refused for want of a free pair

    def allocate(self):
        """The RTP port of a free pair (RTCP is +1), or None when all are in use."""
        try:
            port = self._free.popleft()
        except IndexError:
            self.exhausted += 1
            return None
        self._used.add(port)
        return port

    def release(self, port):
        """Give a pair back; releasing a port not in use changes nothing."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    def __contains__(self, port):
        return port in self._used

    @property
    def in_use(self):
        """Pairs allocated now."""
        return len(self._used)

    @property
    def free(self):
        """Pairs that allocate() can still hand out."""
        return len(self._free)
