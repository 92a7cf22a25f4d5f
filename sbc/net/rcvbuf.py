"""UDP receive buffers: sized at bind, watched for drops.

A datagram that arrives while the socket's receive buffer is full is dropped
by the kernel, unseen by sbc; the peer retransmits 500 ms later, or gives up.
Linux's default buffer (net.core.rmem_default, 208 KiB) holds about 160
datagrams of 600 bytes, a few tens of milliseconds of signalling at a
thousand calls a second: a short stall (a burst of calls, a collection) is
enough to lose some. `[udp] receive_buffer` asks for more; the kernel grants
at most net.core.rmem_max unless the process may force it (CAP_NET_ADMIN).

Sizes here are the kernel's own count (what `ss -m` shows as rb): Linux
grants twice the size asked for, the other half paying for its bookkeeping
of each datagram.
"""

import socket
import struct
import sys

LINUX = sys.platform.startswith("linux")
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if LINUX else None)  # not in Python's socket
# getsockopt(SOL_SOCKET, SO_MEMINFO): the socket's memory counters (Linux,
# include/uapi/linux/sock_diag.h), the last of the nine is SK_MEMINFO_DROPS.
SO_MEMINFO = 55
_MEMINFO = struct.Struct("9I")


def in_full(wanted):
    """The kernel's count of a `wanted`-byte buffer granted in full."""
    return 2 * wanted if LINUX else wanted


def size(sock, wanted):
    """Ask for a `wanted`-byte receive buffer (0: keep the kernel's); the kernel's count after."""
    if wanted:
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # forcing needs CAP_NET_ADMIN
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, wanted)
                break
            except OSError:
                continue
    return granted(sock)


def granted(sock):
    """The socket's receive buffer in bytes, as the kernel counts it."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


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
