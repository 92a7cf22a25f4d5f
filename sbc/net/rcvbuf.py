"""UDP receive buffers: sized at bind, watched for drops.

A datagram that arrives while the socket's receive buffer is full is dropped
by the kernel, unseen by sbc; the peer retransmits 500 ms later, or gives up.
The kernel's default buffer (net.core.rmem_default, 208 KiB on most Linux
systems) holds about a tenth of a second of signalling at a thousand calls a
second: a short stall (a burst of calls, a collection) is enough to lose
some. `[udp] receive_buffer` asks for more; the kernel grants at most
net.core.rmem_max unless the process may force it (CAP_NET_ADMIN).
"""

import socket
import struct
import sys

LINUX = sys.platform.startswith("linux")
# getsockopt(SOL_SOCKET, SO_MEMINFO): the socket's memory counters (Linux,
# include/uapi/linux/sock_diag.h), the last of the nine is SK_MEMINFO_DROPS.
SO_MEMINFO = 55
_MEMINFO = struct.Struct("9I")


def size(sock, wanted):
    """Ask for a `wanted`-byte receive buffer (0: keep the kernel's); the bytes granted."""
    if wanted:
        for name in ("SO_RCVBUFFORCE", "SO_RCVBUF"):  # forcing needs CAP_NET_ADMIN
            option = getattr(socket, name, None)
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, wanted)
                break
            except OSError:
                continue
    return granted(sock)


def granted(sock):
    """The socket's receive buffer in bytes (Linux reports twice what was set,
    the other half being its bookkeeping: halved here)."""
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return got // 2 if LINUX else got


def drops(sock):
    """Datagrams the kernel dropped for `sock` so far, or None where it does not say."""
    if not LINUX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
    except OSError:
        return None
    if len(raw) < _MEMINFO.size:
        return None
    return _MEMINFO.unpack(raw)[8]
