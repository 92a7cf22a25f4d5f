"""RTP and RTCP, sans-I/O: header parsing (`packet`), the relay's port pool
(`ports`) and per-stream state: latching and receiver statistics (`stream`).

The sockets that use them live in `sbc.net.relay`.
"""
