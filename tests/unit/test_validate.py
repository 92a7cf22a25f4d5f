"""check_request: verdicts stay the same when a Request-URI or Contact was seen before."""

from twisted.trial import unittest

from sbc.sip.message import DEFAULT_LIMITS, parse
from sbc.sip.validate import check_request


def request(method="BYE", uri="sip:sbc@192.0.2.1:5060;transport=udp",
            contact="<sip:ua@192.0.2.9:5060>"):
    return parse((f"{method} {uri} SIP/2.0\r\n"
                  "Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-v1\r\n"
                  "From: <sip:a@192.0.2.9>;tag=1\r\nTo: <sip:b@192.0.2.1>;tag=2\r\n"
                  f"Call-ID: v1\r\nCSeq: 2 {method}\r\nContact: {contact}\r\n"
                  "Content-Length: 0\r\n\r\n").encode())


def verdict(req):
    reject = check_request(req, DEFAULT_LIMITS)
    return None if reject is None else (reject.status, reject.reason)


class SeenBeforeTests(unittest.TestCase):

    def test_same_verdicts_twice(self):
        """Each request gets the same verdict the first and the second time its values are seen."""
        cases = [
            (request(), None),
            (request(contact="*"), (400, "Invalid wildcard Contact")),
            (request(contact="<sip:ua@[::1>"), (400, "Unterminated IPv6 reference in URI host in Contact header")),
            (request(uri="sip:sbc@192.0.2.1?Subject=x"), (400, "Headers in Request-URI")),
            (request(uri="http://example.com/"), (416, "Unsupported URI Scheme")),
        ]
        for _ in range(2):
            for req, expected in cases:
                req._cache.clear()  # parse afresh, as a new message would
                self.assertEqual(verdict(req), expected, bytes(req))

    def test_seen_values_still_parse_on_demand(self):
        """A request whose values passed before still parses them when asked."""
        verdict(request())
        req = request()
        self.assertIsNone(verdict(req))
        self.assertEqual((req.request_uri.host, str(req.contacts[0].uri)),
                         ("192.0.2.1", "sip:ua@192.0.2.9:5060"))
