"""sbc.net.tls: self-signed certificates, contexts over real loopback TLS,
config errors, and handshake-failure detection."""

import os
import shutil
import stat
import tempfile
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from sbc.errors import ConfigError
from sbc.net.tls import (
    HandshakeTracking,
    client_context,
    ensure_self_signed,
    is_handshake_failure,
    peer_names,
    server_context,
)

# -- certificate helpers ----------------------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca():
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test ca"))
        .issuer_name(_name("test ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(ca, cn, dns=None, is_ca=False):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    if is_ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_cert(path, cert):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path, key, password=None):
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
    return path


# -- loopback plumbing ------------------------------------------------------


class Peer(HandshakeTracking, Protocol):
    """One end of a test connection: records the handshake and the end.

    A client (`greet=True`) sends b"ping" once the handshake completes and
    hangs up when it reads the echo; a server echoes what it reads.
    """

    def __init__(self, greet=False):
        self.greet = greet
        self.received = b""
        self.version = None
        self.peer_cn = None
        self.names = None
        self.reason = None
        self.lost = Deferred()

    def handshakeCompleted(self):
        super().handshakeCompleted()
        self.version = self.transport.getHandle().get_protocol_version_name()
        peer = self.transport.getPeerCertificate()
        if peer is not None:
            cn = peer.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            self.peer_cn = cn[0].value
        self.names = peer_names(self.transport)
        if self.greet:
            self.transport.write(b"ping")

    def dataReceived(self, data):
        self.received += data
        if self.greet:
            self.transport.loseConnection()
        else:
            self.transport.write(data)

    def connectionLost(self, reason):
        self.reason = reason
        self.lost.callback(self)


class ServerFactory(Factory):
    def __init__(self):
        self.accepted = Deferred()

    def buildProtocol(self, addr):
        peer = Peer()
        self.accepted.callback(peer)
        return peer


class OneClient(ClientFactory):
    def __init__(self):
        self.peer = Peer(greet=True)

    def buildProtocol(self, addr):
        return self.peer

    def clientConnectionFailed(self, connector, reason):
        self.peer.lost.errback(reason)


@implementer(IOpenSSLContextFactory)
class LegacyClient:
    """A client offering only TLS 1.1, as an old peer would."""

    def getContext(self):
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_1_VERSION)
        ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
        # OpenSSL 3 allows TLS 1.1 only at security level 0.
        ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        return ctx


@implementer(IOpenSSLContextFactory)
class CappedClient:
    """A client that does not verify and offers at most `version`."""

    def __init__(self, version, cert=None, key=None):
        self.version = version
        self.cert = cert
        self.key = key

    def getContext(self):
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_max_proto_version(self.version)
        if self.cert:
            ctx.use_certificate_file(self.cert)
            ctx.use_privatekey_file(self.key)
        return ctx


class TempPaths:
    def path(self):
        """A fresh path in a directory removed after the test.

        (trial's mktemp() is relative to the working directory, which under
        pytest is the repository.)
        """
        if not hasattr(self, "_tmp"):
            self._tmp = tempfile.mkdtemp(prefix="sbc-test-")
            self.addCleanup(shutil.rmtree, self._tmp)
        self._count = getattr(self, "_count", 0) + 1
        return os.path.join(self._tmp, str(self._count))


class LoopbackMixin(TempPaths):
    def listen(self, context):
        factory = ServerFactory()
        port = reactor.listenSSL(0, factory, context, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @inlineCallbacks
    def exchange(self, server_ctx, client_ctx):
        """Connect once; return (client, server) peers after both ends closed."""
        factory, port = self.listen(server_ctx)
        client = OneClient()
        reactor.connectSSL("127.0.0.1", port, client, client_ctx)
        server = yield factory.accepted
        yield server.lost
        yield client.peer.lost
        return client.peer, server

    def server_pair(self):
        cert, key, _ = ensure_self_signed(self.path())
        return cert, key


# -- self-signed ------------------------------------------------------------


class SelfSignedTests(TempPaths, unittest.TestCase):
    def load(self, path):
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())

    def test_generates_pair(self):
        """A first call writes an ECDSA P-256 pair under state_dir/tls with a private key file."""
        state = self.path()
        cert_path, key_path, created = ensure_self_signed(state)
        self.assertTrue(created)
        self.assertEqual(cert_path, os.path.join(state, "tls", "selfsigned.crt"))
        self.assertEqual(key_path, os.path.join(state, "tls", "selfsigned.key"))
        self.assertEqual(stat.S_IMODE(os.stat(key_path).st_mode), 0o600)
        cert = self.load(cert_path)
        self.assertIsInstance(cert.public_key().curve, ec.SECP256R1)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.assertEqual(lifetime, timedelta(days=365, minutes=5))
        self.assertEqual(
            sorted(os.listdir(os.path.join(state, "tls"))), ["selfsigned.crt", "selfsigned.key"]
        )

    def test_sans(self):
        """The certificate names every requested host name and address in its SAN."""
        cert_path, _, _ = ensure_self_signed(
            self.path(), hostnames=("sbc.example.net", "localhost"), addresses=("192.0.2.7", "::1")
        )
        san = self.load(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(san.value.get_values_for_type(x509.DNSName), ["sbc.example.net", "localhost"])
        self.assertEqual(
            [str(a) for a in san.value.get_values_for_type(x509.IPAddress)], ["192.0.2.7", "::1"]
        )

    def test_reuses_pair(self):
        """A second call returns the same files untouched and created=False."""
        state = self.path()
        cert_path, key_path, _ = ensure_self_signed(state)
        with open(cert_path, "rb") as f:
            before = f.read()
        again = ensure_self_signed(state)
        self.assertEqual(again, (cert_path, key_path, False))
        with open(cert_path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_renews_near_expiry(self):
        """A certificate with 30 days or less left is replaced."""
        state = self.path()
        ensure_self_signed(state)
        later = datetime.now(timezone.utc) + timedelta(days=336)
        self.assertFalse(ensure_self_signed(state, now=later - timedelta(days=2))[2])
        self.assertTrue(ensure_self_signed(state, now=later)[2])

    def test_renews_when_names_change(self):
        """Asking for different names replaces the certificate."""
        state = self.path()
        ensure_self_signed(state)
        self.assertTrue(ensure_self_signed(state, hostnames=("sbc.example.net",))[2])

    def test_renews_mismatched_pair(self):
        """A key that does not belong to the certificate (an interrupted write) is replaced."""
        state = self.path()
        _, key_path, _ = ensure_self_signed(state)
        _write_key(key_path, ec.generate_private_key(ec.SECP256R1()))
        self.assertTrue(ensure_self_signed(state)[2])

    def test_renews_garbage(self):
        """A file that is not PEM is replaced."""
        state = self.path()
        cert_path, _, _ = ensure_self_signed(state)
        with open(cert_path, "wb") as f:
            f.write(b"garbage")
        self.assertTrue(ensure_self_signed(state)[2])
        self.assertIsNotNone(self.load(cert_path))

    def test_unwritable_state_dir(self):
        """A state_dir that cannot hold the files is a ConfigError on state_dir."""
        state = self.path()
        with open(state, "w") as f:
            f.write("a file, not a directory")
        e = self.assertRaises(ConfigError, ensure_self_signed, state)
        self.assertEqual(e.key, "state_dir")
        self.assertIn("Not a directory", str(e))


# -- config errors ----------------------------------------------------------


class ContextErrorTests(LoopbackMixin, unittest.TestCase):
    def test_missing_cert(self):
        """A missing certificate file names tls.cert and the OS reason."""
        _, key = self.server_pair()
        e = self.assertRaises(ConfigError, server_context, "/nonexistent/x.crt", key)
        self.assertEqual(
            str(e), "<config>: tls.cert: cannot read /nonexistent/x.crt: No such file or directory"
        )

    def test_cert_not_pem(self):
        """A certificate file without a PEM certificate says so."""
        _, key = self.server_pair()
        bad = self.path()
        with open(bad, "w") as f:
            f.write("hello\n")
        e = self.assertRaises(ConfigError, server_context, bad, key)
        self.assertEqual(str(e), f"<config>: tls.cert: {bad} is not a PEM certificate")

    def test_key_not_pem(self):
        """A key file holding a certificate instead is not a PEM private key."""
        cert, _ = self.server_pair()
        e = self.assertRaises(ConfigError, server_context, cert, cert)
        self.assertEqual(str(e), f"<config>: tls.key: {cert} is not a PEM private key")

    def test_encrypted_key(self):
        """A passphrase-protected key is refused with a hint."""
        cert, _ = self.server_pair()
        key = _write_key(self.path(), ec.generate_private_key(ec.SECP256R1()), b"secret")
        e = self.assertRaises(ConfigError, server_context, cert, key)
        self.assertEqual(
            str(e), f"<config>: tls.key: {key} is an encrypted private key; sbc needs it unencrypted"
        )

    def test_key_mismatch(self):
        """A key from another pair gives the exact mismatch message."""
        cert, _ = self.server_pair()
        _, other_key = self.server_pair()
        e = self.assertRaises(ConfigError, server_context, cert, other_key)
        self.assertEqual(
            str(e), f"<config>: tls.key: private key {other_key} does not match certificate {cert}"
        )
        self.assertEqual(e.key, "tls.key")

    def test_prefix(self):
        """The caller's config table prefixes the key in the message."""
        cert, _ = self.server_pair()
        _, other_key = self.server_pair()
        e = self.assertRaises(
            ConfigError, server_context, cert, other_key, prefix="listen.tls"
        )
        self.assertEqual(e.key, "listen.tls.key")

    def test_bad_min_version(self):
        """Only TLS 1.2 and 1.3 may be the minimum."""
        cert, key = self.server_pair()
        e = self.assertRaises(ConfigError, server_context, cert, key, min_version="1.1")
        self.assertEqual(str(e), "<config>: tls.min_version: must be \"1.2\" or \"1.3\", not '1.1'")

    def test_verify_peer_needs_ca(self):
        """Verifying clients without a CA file is a config error on tls.ca."""
        cert, key = self.server_pair()
        e = self.assertRaises(ConfigError, server_context, cert, key, verify_peer=True)
        self.assertEqual(e.key, "tls.ca")

    def test_client_verify_needs_hostname(self):
        """A verifying client context needs the name to check."""
        e = self.assertRaises(ConfigError, client_context)
        self.assertEqual(e.key, "tls.hostname")

    def test_client_cert_without_key(self):
        """A client certificate without its key is refused."""
        cert, _ = self.server_pair()
        e = self.assertRaises(ConfigError, client_context, "localhost", cert=cert)
        self.assertEqual(str(e), "<config>: tls.key: cert and key must be given together")


# -- real handshakes --------------------------------------------------------


class ServerHandshakeTests(LoopbackMixin, unittest.TestCase):
    @inlineCallbacks
    def test_tls12_accepted(self):
        """A TLS 1.2 client completes the handshake and exchanges data."""
        cert, key = self.server_pair()
        client, server = yield self.exchange(
            server_context(cert, key), CappedClient(SSL.TLS1_2_VERSION)
        )
        self.assertEqual(client.version, "TLSv1.2")
        self.assertEqual(client.received, b"ping")
        self.assertEqual(server.received, b"ping")
        self.assertFalse(is_handshake_failure(server.reason, server.tls_handshake_done))

    @inlineCallbacks
    def test_tls13_preferred(self):
        """A modern client gets TLS 1.3."""
        cert, key = self.server_pair()
        client, server = yield self.exchange(
            server_context(cert, key), CappedClient(SSL.TLS1_3_VERSION)
        )
        self.assertEqual((client.version, server.version), ("TLSv1.3", "TLSv1.3"))

    @inlineCallbacks
    def test_tls11_refused(self):
        """A TLS 1.1-only client is refused with a protocol version alert and counted as a failure."""
        cert, key = self.server_pair()
        client, server = yield self.exchange(server_context(cert, key), LegacyClient())
        self.assertIsNone(client.version)
        self.assertIsNone(server.version)
        server.reason.trap(SSL.Error)
        self.assertIn("unsupported protocol", str(server.reason.value))
        client.reason.trap(SSL.Error)
        self.assertIn("alert protocol version", str(client.reason.value))
        self.assertTrue(is_handshake_failure(server.reason, server.tls_handshake_done))
        self.assertTrue(is_handshake_failure(client.reason, client.tls_handshake_done))

    @inlineCallbacks
    def test_min_13_refuses_12(self):
        """With min_version 1.3 a TLS 1.2 client is refused."""
        cert, key = self.server_pair()
        client, server = yield self.exchange(
            server_context(cert, key, min_version="1.3"), CappedClient(SSL.TLS1_2_VERSION)
        )
        self.assertIsNone(server.version)
        self.assertTrue(is_handshake_failure(server.reason, server.tls_handshake_done))

    @inlineCallbacks
    def test_verify_peer_rejects_client_without_cert(self):
        """A verifying server fails the handshake of a client that shows no certificate."""
        cert, key = self.server_pair()
        ca_path = _write_cert(self.path(), _make_ca()[0])
        client, server = yield self.exchange(
            server_context(cert, key, ca=ca_path, verify_peer=True),
            CappedClient(SSL.TLS1_3_VERSION),
        )
        self.assertIsNone(server.version)
        self.assertEqual(server.received, b"")
        self.assertEqual(client.received, b"")
        server.reason.trap(SSL.Error)
        self.assertIn("peer did not return a certificate", str(server.reason.value))
        self.assertTrue(is_handshake_failure(server.reason, server.tls_handshake_done))

    @inlineCallbacks
    def test_verify_peer_rejects_foreign_client_cert(self):
        """A client certificate from another CA is refused."""
        cert, key = self.server_pair()
        ca_path = _write_cert(self.path(), _make_ca()[0])
        stranger = _issue(_make_ca(), "stranger")
        client, server = yield self.exchange(
            server_context(cert, key, ca=ca_path, verify_peer=True),
            CappedClient(
                SSL.TLS1_2_VERSION,
                _write_cert(self.path(), stranger[0]),
                _write_key(self.path(), stranger[1]),
            ),
        )
        self.assertIsNone(server.version)
        self.assertTrue(is_handshake_failure(server.reason, server.tls_handshake_done))

    @inlineCallbacks
    def test_verify_peer_accepts_client_cert(self):
        """A client certificate issued by the configured CA is accepted and visible to the server."""
        cert, key = self.server_pair()
        ca = _make_ca()
        ca_path = _write_cert(self.path(), ca[0])
        pbx = _issue(ca, "pbx.example.net")
        client, server = yield self.exchange(
            server_context(cert, key, ca=ca_path, verify_peer=True),
            CappedClient(
                SSL.TLS1_3_VERSION,
                _write_cert(self.path(), pbx[0]),
                _write_key(self.path(), pbx[1]),
            ),
        )
        self.assertEqual(server.peer_cn, "pbx.example.net")
        self.assertEqual(server.received, b"ping")

    @inlineCallbacks
    def test_peer_names_of_client_cert(self):
        """The names that identify a TLS peer come from its verified certificate:
        subjectAltName DNS names, else the subject CN; none without a certificate."""
        cert, key = self.server_pair()
        ca = _make_ca()
        ca_path = _write_cert(self.path(), ca[0])
        seen = []
        for issued in (_issue(ca, "cn.example.net", dns="PBX.example.net"),
                       _issue(ca, "cn-only.example.net")):
            _, server = yield self.exchange(
                server_context(cert, key, ca=ca_path, verify_peer=True),
                CappedClient(SSL.TLS1_3_VERSION, _write_cert(self.path(), issued[0]),
                             _write_key(self.path(), issued[1])))
            seen.append(server.names)
        _, server = yield self.exchange(server_context(cert, key),
                                        CappedClient(SSL.TLS1_3_VERSION))
        seen.append(server.names)
        self.assertEqual(seen, [("pbx.example.net",), ("cn-only.example.net",), ()])

    @inlineCallbacks
    def test_plaintext_on_tls_port(self):
        """Plain SIP sent to a TLS port is a handshake failure."""
        cert, key = self.server_pair()
        factory, port = self.listen(server_context(cert, key))

        class Plain(Protocol):
            def connectionMade(self):
                self.transport.write(b"OPTIONS sip:x SIP/2.0\r\n\r\n")

        client = ClientFactory.forProtocol(Plain)
        connector = reactor.connectTCP("127.0.0.1", port, client)
        self.addCleanup(connector.disconnect)
        server = yield factory.accepted
        yield server.lost
        server.reason.trap(SSL.Error)
        self.assertTrue(is_handshake_failure(server.reason, server.tls_handshake_done))


class ClientHandshakeTests(LoopbackMixin, unittest.TestCase):
    @inlineCallbacks
    def test_verifies_name(self):
        """A client trusting the server's certificate connects by its DNS name."""
        cert, key = self.server_pair()
        client, _ = yield self.exchange(
            server_context(cert, key), client_context("localhost", ca=cert)
        )
        self.assertEqual(client.received, b"ping")

    @inlineCallbacks
    def test_verifies_address(self):
        """A client connects by IP address when the SAN lists it."""
        cert, key = self.server_pair()
        client, _ = yield self.exchange(
            server_context(cert, key), client_context("127.0.0.1", ca=cert)
        )
        self.assertEqual(client.received, b"ping")

    @inlineCallbacks
    def test_wrong_name_fails(self):
        """A certificate that does not name the host fails the outbound handshake."""
        cert, key = self.server_pair()
        client, _ = yield self.exchange(
            server_context(cert, key), client_context("sbc.example.net", ca=cert)
        )
        client.reason.trap(VerificationError)
        self.assertEqual(client.received, b"")
        self.assertTrue(is_handshake_failure(client.reason, client.tls_handshake_done))

    @inlineCallbacks
    def test_untrusted_fails(self):
        """A server certificate not signed by the configured CA fails the handshake."""
        cert, key = self.server_pair()
        other_ca = _write_cert(self.path(), _make_ca()[0])
        client, _ = yield self.exchange(
            server_context(cert, key), client_context("localhost", ca=other_ca)
        )
        client.reason.trap(SSL.Error)
        self.assertIn("certificate verify failed", str(client.reason.value))
        self.assertTrue(is_handshake_failure(client.reason, client.tls_handshake_done))

    @inlineCallbacks
    def test_chain_sent(self):
        """Intermediates after the leaf in the cert file reach a client that trusts only the root."""
        root = _make_ca()
        intermediate = _issue(root, "intermediate", is_ca=True)
        leaf = _issue(intermediate, "sbc", dns="localhost")
        chain = self.path()
        with open(chain, "wb") as f:
            for c in (leaf[0], intermediate[0]):
                f.write(c.public_bytes(serialization.Encoding.PEM))
        client, _ = yield self.exchange(
            server_context(chain, _write_key(self.path(), leaf[1])),
            client_context("localhost", ca=_write_cert(self.path(), root[0])),
        )
        self.assertEqual(client.received, b"ping")

    @inlineCallbacks
    def test_no_verify(self):
        """verify_peer=False connects to any certificate."""
        cert, key = self.server_pair()
        client, _ = yield self.exchange(
            server_context(cert, key), client_context(verify_peer=False)
        )
        self.assertEqual(client.received, b"ping")

    @inlineCallbacks
    def test_client_cert_presented(self):
        """A client certificate from client_context is accepted by a verifying server."""
        cert, key = self.server_pair()
        ca = _make_ca()
        ca_path = _write_cert(self.path(), ca[0])
        trunk = _issue(ca, "sbc.example.net")
        client, server = yield self.exchange(
            server_context(cert, key, ca=ca_path, verify_peer=True),
            client_context(
                "localhost",
                ca=cert,
                cert=_write_cert(self.path(), trunk[0]),
                key=_write_key(self.path(), trunk[1]),
            ),
        )
        self.assertEqual(server.peer_cn, "sbc.example.net")
        self.assertEqual(client.received, b"ping")

    @inlineCallbacks
    def test_client_min_version(self):
        """A client with min_version 1.3 will not talk to a TLS 1.2-only server."""
        cert, key = self.server_pair()

        @implementer(IOpenSSLContextFactory)
        class OldServer:
            def getContext(self):
                ctx = SSL.Context(SSL.TLS_METHOD)
                ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
                ctx.use_certificate_file(cert)
                ctx.use_privatekey_file(key)
                return ctx

        client, _ = yield self.exchange(
            OldServer(), client_context("localhost", ca=cert, min_version="1.3")
        )
        self.assertIsNone(client.version)
        self.assertTrue(is_handshake_failure(client.reason, client.tls_handshake_done))


# -- the predicate on its own -----------------------------------------------


class IsHandshakeFailureTests(unittest.TestCase):
    def test_after_handshake_never(self):
        """Nothing after a completed handshake is a handshake failure."""
        self.assertFalse(is_handshake_failure(Failure(SSL.Error("x")), True))
        self.assertFalse(is_handshake_failure(Failure(ConnectionLost()), True))

    def test_peer_hangs_up(self):
        """A peer closing mid-handshake is a failure."""
        self.assertTrue(is_handshake_failure(Failure(ConnectionDone()), False))
        self.assertTrue(is_handshake_failure(Failure(ConnectionLost()), False))

    def test_our_abort(self):
        """Our own abort before the handshake (a connection limit) is not."""
        self.assertFalse(is_handshake_failure(Failure(ConnectionAborted()), False))

    def test_tracking_default(self):
        """A protocol using the mixin starts with the handshake not done."""
        self.assertFalse(Peer().tls_handshake_done)
