"""TLS contexts for SIP over TLS, and a self-signed certificate for first runs.

Certificates and keys are read once, here, and every problem with them becomes
a ConfigError naming the config key, so a bad file fails the start before any
socket is bound.

Handshake failures: Twisted's TLS layer hands an application protocol the
OpenSSL error as the `reason` of `connectionLost` when the handshake fails,
and calls `handshakeCompleted()` on protocols that provide
`IHandshakeListener` once it succeeds.  A protocol mixes in
`HandshakeTracking` and asks `is_handshake_failure(reason, done)` in
`connectionLost`.
"""

import ipaddress
import os
import tempfile
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet import error as neterror
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from zope.interface import implementer

from sbc.errors import ConfigError

__all__ = [
    "HandshakeTracking",
    "client_context",
    "ensure_self_signed",
    "is_handshake_failure",
    "server_context",
]

SELF_SIGNED_DAYS = 365
# A certificate this close to its end is replaced at start-up rather than
# left to expire while the process runs.
RENEW_BEFORE = timedelta(days=30)

_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


# -- self-signed certificate ------------------------------------------------


def ensure_self_signed(
    state_dir,
    hostnames=("localhost",),
    addresses=("127.0.0.1", "::1"),
    *,
    now=None,
):
    """Return `(cert_path, key_path, created)` for `state_dir/tls/selfsigned.*`.

    The pair on disk is reused when it loads, the key matches, its SAN names
    exactly `hostnames` and `addresses`, and it is valid for more than 30
    days after `now` (default: the current UTC time).  Otherwise a new ECDSA
    P-256 pair valid for one year is written; the key file is mode 0600.
    Errors writing the files raise ConfigError with key "state_dir".
    """
    now = now or datetime.now(timezone.utc)
    tls_dir = os.path.join(state_dir, "tls")
    cert_path = os.path.join(tls_dir, "selfsigned.crt")
    key_path = os.path.join(tls_dir, "selfsigned.key")
    hostnames = tuple(hostnames)
    addresses = tuple(str(ipaddress.ip_address(a)) for a in addresses)

    if _reusable(cert_path, key_path, hostnames, addresses, now):
        return cert_path, key_path, False

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, hostnames, addresses, now)
    try:
        os.makedirs(tls_dir, mode=0o700, exist_ok=True)
        # Key first: a crash between the two writes leaves a mismatched pair,
        # which the next start detects and replaces.
        _write_atomically(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            0o600,
        )
        _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as e:
        raise ConfigError(
            f"cannot write {e.filename or tls_dir}: {e.strerror}", key="state_dir"
        ) from e
    return cert_path, key_path, True


def _reusable(cert_path, key_path, hostnames, addresses, now):
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if key.public_key() != cert.public_key():
        return False
    if cert.not_valid_after_utc - now <= RENEW_BEFORE or cert.not_valid_before_utc > now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = san.get_values_for_type(x509.DNSName)
    ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return sorted(names) == sorted(hostnames) and sorted(ips) == sorted(addresses)


def _self_signed(key, hostnames, addresses, now):
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "sbc")]
    )
    san = [x509.DNSName(h) for h in hostnames]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a little so a peer whose clock is slightly behind accepts it.
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_atomically(path, data, mode):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- loading ----------------------------------------------------------------


def _read(path, key):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", key=key) from e


def _load_certs(path, key):
    """All PEM certificates in `path`, leaf first."""
    data = _read(path, key)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{path} is not a PEM certificate", key=key)
    return certs


def _load_key(path, key):
    data = _read(path, key)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise ConfigError(
            f"{path} is an encrypted private key; sbc needs it unencrypted", key=key
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"{path} is not a PEM private key", key=key) from e


def _load_pair(cert, key, prefix):
    """(leaf, [intermediates], private key) from a cert file and its key file."""
    certs = _load_certs(cert, f"{prefix}.cert")
    private = _load_key(key, f"{prefix}.key")
    if private.public_key() != certs[0].public_key():
        raise ConfigError(
            f"private key {key} does not match certificate {cert}", key=f"{prefix}.key"
        )
    # pyOpenSSL takes cryptography objects for the context directly.
    return certs[0], certs[1:], private


def _trust_root(ca, prefix):
    certs = _load_certs(ca, f"{prefix}.ca")
    return trustRootFromCertificates(
        [Certificate(crypto.X509.from_cryptography(c)) for c in certs]
    )


def _min_version(min_version, prefix):
    try:
        return _VERSIONS[str(min_version)]
    except KeyError:
        raise ConfigError(
            f'must be "1.2" or "1.3", not {min_version!r}', key=f"{prefix}.min_version"
        ) from None


def _checked(options, prefix):
    # Building the context now turns OpenSSL's complaints into a config error
    # at start-up instead of a failure on the first connection.
    try:
        options.getContext()
    except SSL.Error as e:
        raise ConfigError(f"OpenSSL refused the settings: {e}", key=prefix) from e
    return options


# -- contexts ---------------------------------------------------------------


def server_context(cert, key, ca=None, verify_peer=False, min_version="1.2", *, prefix="tls"):
    """A context factory for `listenSSL` / `SSL4ServerEndpoint`.

    `cert` is a PEM file with the certificate first and any intermediates
    after it; `key` its unencrypted PEM private key.  With `verify_peer`,
    clients must present a certificate issued by a CA in the PEM file `ca`
    (required then; unused otherwise).  `min_version` is "1.2" or "1.3".
    Problems raise ConfigError with key `prefix.cert`, `prefix.key`,
    `prefix.ca` or `prefix.min_version`.
    """
    minimum = _min_version(min_version, prefix)
    leaf, chain, private = _load_pair(cert, key, prefix)
    options = {}
    if verify_peer:
        if ca is None:
            raise ConfigError(
                "verify_peer needs a CA file to check client certificates against",
                key=f"{prefix}.ca",
            )
        # trustRoot also makes a client certificate mandatory.
        options["trustRoot"] = _trust_root(ca, prefix)
    return _checked(
        CertificateOptions(
            privateKey=private,
            certificate=leaf,
            extraCertChain=chain or None,
            raiseMinimumTo=minimum,
            **options,
        ),
        prefix,
    )


def client_context(
    hostname=None,
    ca=None,
    verify_peer=True,
    min_version="1.2",
    cert=None,
    key=None,
    *,
    prefix="tls",
):
    """A client connection creator for `connectSSL` / `SSL4ClientEndpoint`.

    With `verify_peer` the server's certificate must chain to a CA in the PEM
    file `ca` (the system's trust store when None) and name `hostname` (a DNS
    name or IP address literal) in its SAN; a DNS `hostname` is also sent as
    SNI.  Without it the server's certificate is not checked at all.  `cert`
    and `key` give an optional client certificate.
    """
    minimum = _min_version(min_version, prefix)
    if (cert is None) != (key is None):
        missing = "key" if key is None else "cert"
        raise ConfigError("cert and key must be given together", key=f"{prefix}.{missing}")
    extra = {"raiseMinimumTo": minimum}
    pair = _load_pair(cert, key, prefix) if cert is not None else None
    if not verify_peer:
        if pair is not None:
            extra.update(privateKey=pair[2], certificate=pair[0], extraCertChain=pair[1] or None)
        return _checked(CertificateOptions(**extra), prefix)
    if not hostname:
        raise ConfigError(
            "verify_peer needs the host name to check the certificate against",
            key=f"{prefix}.hostname",
        )
    trust = _trust_root(ca, prefix) if ca is not None else platformTrust()
    if pair is not None:
        extra.update(privateKey=pair[2], certificate=pair[0], extraCertChain=pair[1] or None)
    return optionsForClientTLS(hostname, trustRoot=trust, extraCertificateOptions=extra)


def peer_names(transport):
    """The DNS names (subjectAltName, else the subject's CN) of the verified
    certificate a TLS peer presented on `transport`; () without one."""
    try:
        cert = transport.getPeerCertificate()
    except Exception:  # not TLS, or gone: no names is the safe answer
        return ()
    if cert is None:
        return ()
    crypto = cert.to_cryptography()
    try:
        sans = crypto.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = sans.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in crypto.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(n.lower().rstrip(".") for n in names if isinstance(n, str))


# -- handshake failures -----------------------------------------------------


@implementer(IHandshakeListener)
class HandshakeTracking:
    """Mixin for a protocol run under TLS: notes when the handshake completes.

    Twisted's TLS layer calls `handshakeCompleted()` on wrapped protocols that
    provide IHandshakeListener; this records it in `tls_handshake_done`.
    A subclass that overrides `handshakeCompleted` calls up to it.

        class SIPStreamProtocol(HandshakeTracking, Protocol):
            def connectionLost(self, reason):
                if self.tls and is_handshake_failure(reason, self.tls_handshake_done):
                    self.metrics.tls_handshake_failed("inbound")
    """

    tls_handshake_done = False

    def handshakeCompleted(self):
        self.tls_handshake_done = True


def is_handshake_failure(reason, handshake_done):
    """Did a TLS connection lost with `reason` (a Failure) fail its handshake?

    True when the handshake had not completed and the connection ended for a
    reason other than our own abort: an OpenSSL error (no shared version or
    cipher, bad or missing certificate, plaintext on a TLS port), a failed
    host name check, or the peer hanging up mid-handshake.  A connection we
    closed ourselves before the handshake (e.g. over a connection limit) is
    not one; it is counted where it is refused.
    """
    if handshake_done:
        return False
    value = reason.value
    if isinstance(value, neterror.ConnectionAborted):
        return False
    return isinstance(
        value,
        (SSL.Error, VerificationError, neterror.ConnectionLost, neterror.ConnectionDone),
    )
