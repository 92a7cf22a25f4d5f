"""Config loading: defaults, validation, and the file:line: key: why of errors."""

import dataclasses
import os
import tempfile
from pathlib import Path
from textwrap import dedent

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from sbc.config import (
    SCHEMA, TCP, TLS, Config, Limits, Listener, Metrics, Timers, load, loads)
from sbc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

UDP = """\
[[listen]]
transport = "udp"
address = "127.0.0.1"
"""


class ErrorCase(unittest.TestCase):
    def assertError(self, text, expected, path="sbc.toml"):
        """Loading `text` fails with exactly `expected` as the message."""
        with self.assertRaises(ConfigError) as cm:
            loads(dedent(text), path)
        self.assertEqual(str(cm.exception), expected)
        return cm.exception


class DefaultsTests(unittest.TestCase):
    def test_default_is_one_udp_listener(self):
        """Config.default() listens on UDP 127.0.0.1:5060 and nothing else."""
        config = Config.default()
        self.assertEqual(config.listeners, (Listener("udp", "127.0.0.1", 5060, ""),))
        self.assertEqual(config.log_level, "info")
        self.assertEqual(config.server_header, "sbc")

    def test_minimal_file_gives_every_default(self):
        """A file with only a listener equals Config.default()."""
        self.assertEqual(loads(UDP, "x.toml"), Config.default(path="x.toml"))

    def test_defaults_match_schema(self):
        """The documented defaults are what an empty section yields."""
        config = loads(UDP + "[tls]\n[metrics]\n[sip.timers]\n[sip.limits]\n[tcp]\n")
        self.assertEqual(config.tls, TLS("", "", "", False, "1.2"))
        self.assertEqual(config.metrics, Metrics(True, "127.0.0.1", 9090))
        self.assertEqual(config.timers, Timers(0.5, 4.0, 5.0))
        self.assertEqual(config.limits, Limits(65535, 256, 8192, 70, 32768))
        self.assertEqual(config.tcp, TCP(300, 10, 4096, 64))
        self.assertEqual((config.state_dir, config.drain_timeout), ("", 60))

    def test_tls_listener_defaults_to_5061(self):
        """A tls listener without a port gets 5061, the others 5060."""
        config = loads(dedent("""\
            [[listen]]
            transport = "tls"
            address = "::"
            [[listen]]
            transport = "tcp"
            address = "::"
            """))
        self.assertEqual([x.port for x in config.listeners], [5061, 5060])

    def test_config_is_frozen(self):
        """A loaded config cannot be changed in place; replace() makes a new one."""
        config = Config.default()
        with self.assertRaises(dataclasses.FrozenInstanceError):
            config.log_level = "debug"
        self.assertEqual(dataclasses.replace(config, log_level="debug").log_level, "debug")

    def test_values_are_read(self):
        """Every section's keys reach the dataclasses, numbers as numbers."""
        config = loads(dedent("""\
            [sbc]
            state_dir = "/var/lib/sbc"
            log_level = "debug"
            server_header = ""
            drain_timeout = 0
            [[listen]]
            transport = "udp"
            address = "0:0::1"
            port = 5080
            public_address = "sbc.example.com"
            [tls]
            cert = "c.pem"
            key = "k.pem"
            ca = "ca.pem"
            verify_peer = true
            min_version = "1.3"
            [metrics]
            enabled = false
            address = "::1"
            port = 9100
            [sip.timers]
            t1 = 1
            t2 = 8
            t4 = 10
            [sip.limits]
            max_message_size = 1024
            max_headers = 16
            max_header_length = 256
            max_vias = 1
            max_body_size = 0
            [tcp]
            idle_timeout = 60
            header_timeout = 2.5
            max_connections = 10
            max_connections_per_ip = 10
            """))
        self.assertEqual(config, Config(
            path="<string>", state_dir="/var/lib/sbc", log_level="debug",
            server_header="", drain_timeout=0,
            listeners=(Listener("udp", "::1", 5080, "sbc.example.com"),),
            tls=TLS("c.pem", "k.pem", "ca.pem", True, "1.3"),
            metrics=Metrics(False, "::1", 9100),
            timers=Timers(1.0, 8.0, 10.0),
            limits=Limits(1024, 16, 256, 1, 0),
            tcp=TCP(60, 2.5, 10, 10)))
        self.assertIsInstance(config.timers.t1, float)

    def test_inline_listeners(self):
        """Listeners may also be written as an array of inline tables."""
        config = loads('listen = [{transport = "udp", address = "10.0.0.1"}]\n')
        self.assertEqual(config.listeners, (Listener("udp", "10.0.0.1", 5060, ""),))


class ShippedFilesTests(unittest.TestCase):
    def test_sysctl_allows_default_receive_buffer(self):
        """systemd/sbc.sysctl.conf lets the kernel grant the default [udp] receive_buffer."""
        lines = (ROOT / "systemd" / "sbc.sysctl.conf").read_text().splitlines()
        settings = dict(line.replace(" ", "").split("=") for line in lines
                        if line.strip() and not line.startswith("#"))
        self.assertGreaterEqual(int(settings["net.core.rmem_max"]),
                                load(ROOT / "conf" / "sbc.toml").udp.receive_buffer)

    def test_conf_sbc_toml(self):
        """conf/sbc.toml loads and listens on udp/tcp 5060 and tls 5061 on loopback."""
        config = load(ROOT / "conf" / "sbc.toml")
        self.assertEqual(config.listeners, (
            Listener("udp", "127.0.0.1", 5060, ""),
            Listener("tcp", "127.0.0.1", 5060, ""),
            Listener("tls", "127.0.0.1", 5061, ""),
        ))
        self.assertEqual(config.tls.cert, "")
        self.assertEqual(config.metrics, Metrics(True, "127.0.0.1", 9090))
        self.assertEqual(config.admission.allow, ("127.0.0.1/32",))  # the lab's own probes
        # peers and tables: tests/unit/test_config_trunking.py
        admission = dataclasses.replace(config.admission, allow=())
        self.assertEqual(
            dataclasses.replace(config, path="<default>", listeners=(), peers=(), tables=(),
                                admission=admission),
            dataclasses.replace(Config.default(), listeners=()))

    def test_conf_sbc_toml_shows_every_key(self):
        """The example files spell out every key, so users can read them as a reference."""
        text = "".join(p.read_text() for p in [ROOT / "conf" / "sbc.toml",
                                                *sorted((ROOT / "conf" / "routes").glob("*.toml"))])
        self.assertRegex(text, r"(?m)^include = ")
        for table, keys in SCHEMA.items():
            for key in keys:
                if table == "admission" and f"{table}.{key}" in SCHEMA:
                    self.assertRegex(text, rf"(?m)^\[{table}\.{key}\]", f"{table}.{key}")
                elif table not in ("", "sip"):  # a key of its own line or of an inline table
                    self.assertRegex(text, rf"(?m)(^|[{{,] *){key} = ", f"{table}.{key}")

    def test_docs_list_every_key(self):
        """docs/config.md has a row for every key the loader accepts."""
        text = (ROOT / "docs" / "config.md").read_text()
        for table, keys in SCHEMA.items():
            if table in ("", "sip"):
                continue
            for key in keys:
                if table in ("admission", "peer.limits") and f"{table}.{key}" in SCHEMA:
                    self.assertIn(f"`[{table}.{key}]`", text, f"{table}.{key}")
                else:
                    self.assertIn(f"| `{key}` |", text, f"{table}.{key}")
        self.assertIn("| `include` |", text)


class TypeTests(ErrorCase):
    def test_string_for_port(self):
        """The brief's example: a string port on line 12 of the second listener."""
        self.assertError("""\
            # sbc

            [sbc]
            log_level = "info"

            [[listen]]
            transport = "udp"
            address = "127.0.0.1"

            [[listen]]
            transport = "tcp"
            port = "abc"
            address = "127.0.0.1"
            """, 'conf/sbc.toml:12: listen[1].port: must be an integer 0..65535, '
                 'got "abc"', path="conf/sbc.toml")

    def test_bool_is_not_an_integer(self):
        """true is refused where an integer is expected, though Python calls it 1."""
        self.assertError(UDP + "port = true\n",
                         "sbc.toml:4: listen[0].port: must be an integer 0..65535, got true")

    def test_float_is_not_an_integer(self):
        """5060.0 is refused for a port."""
        self.assertError(UDP + "port = 5060.0\n",
                         "sbc.toml:4: listen[0].port: must be an integer 0..65535, got 5060.0")

    def test_bool_is_not_a_number(self):
        """A timer cannot be true."""
        self.assertError(UDP + "[sip.timers]\nt1 = true\n",
                         "sbc.toml:5: sip.timers.t1: must be a number > 0, got true")

    def test_string_for_bool(self):
        """verify_peer wants true/false, not "yes"."""
        self.assertError(UDP + '[tls]\nverify_peer = "yes"\n',
                         'sbc.toml:5: tls.verify_peer: must be true or false, got "yes"')

    def test_number_for_string(self):
        """state_dir must be a string."""
        self.assertError(UDP + "[sbc]\nstate_dir = 5\n",
                         "sbc.toml:5: sbc.state_dir: must be a string, got 5")

    def test_scalar_for_table(self):
        """A section written as a plain key is refused."""
        self.assertError("tcp = 5\n" + UDP, "sbc.toml:1: tcp: must be a table, got 5")

    def test_single_table_for_listen(self):
        """[listen] instead of [[listen]] gets a hint about the double brackets."""
        self.assertError('[listen]\ntransport = "udp"\n',
                         "sbc.toml:1: listen: must be an array of tables ([[listen]]), "
                         "got a table")

    def test_integer_for_address(self):
        """An address given as a number is refused, not read as an IPv4 integer."""
        self.assertError('[[listen]]\ntransport = "udp"\naddress = 2130706433\n',
                         "sbc.toml:3: listen[0].address: must be an IPv4 or IPv6 "
                         "address, got 2130706433")


class RangeTests(ErrorCase):
    def test_port_zero(self):
        """Port 0 is accepted: bind any free port (tests and ad-hoc runs use it)."""
        self.assertEqual(loads(UDP + "port = 0\n").listeners[0].port, 0)

    def test_port_negative(self):
        """A negative port is below the range."""
        self.assertError(UDP + "port = -1\n",
                         "sbc.toml:4: listen[0].port: must be an integer 0..65535, got -1")

    def test_port_too_high(self):
        """Port 65536 is above the range."""
        self.assertError(UDP + "[metrics]\nport = 65536\n",
                         "sbc.toml:5: metrics.port: must be an integer 0..65535, got 65536")

    def test_limits_ranges(self):
        """Each limit names its own range."""
        cases = [
            ("max_message_size = 1023", "max_message_size: must be an integer 1024..1048576, got 1023"),
            ("max_message_size = 1048577", "max_message_size: must be an integer 1024..1048576, got 1048577"),
            ("max_headers = 15", "max_headers: must be an integer 16..4096, got 15"),
            ("max_header_length = 65537", "max_header_length: must be an integer 256..65536, got 65537"),
            ("max_vias = 0", "max_vias: must be an integer 1..256, got 0"),
            ("max_body_size = -1", "max_body_size: must be an integer >= 0, got -1"),
        ]
        for line, why in cases:
            self.assertError(UDP + f"[sip.limits]\n{line}\n", f"sbc.toml:5: sip.limits.{why}")

    def test_timer_not_positive(self):
        """Timers must be strictly positive."""
        self.assertError(UDP + "[sip.timers]\nt4 = 0\n",
                         "sbc.toml:5: sip.timers.t4: must be a number > 0, got 0")
        self.assertError(UDP + "[sip.timers]\nt1 = -0.5\n",
                         "sbc.toml:5: sip.timers.t1: must be a number > 0, got -0.5")

    def test_cdr_sync_interval(self):
        """[cdr] sync_interval defaults to 1 s, may be 0 (every commit) and is never negative."""
        self.assertEqual(loads(UDP).cdr.sync_interval, 1.0)
        self.assertEqual(loads(UDP + "[cdr]\nsync_interval = 0\n").cdr.sync_interval, 0)
        self.assertError(UDP + "[cdr]\nsync_interval = -1\n",
                         "sbc.toml:5: cdr.sync_interval: must be a number >= 0 (0 = off), got -1")

    def test_udp_receive_buffer(self):
        """[udp] receive_buffer defaults to 4 MiB; 0 keeps the kernel's; never negative."""
        self.assertEqual(loads(UDP).udp.receive_buffer, 4 << 20)
        self.assertEqual(loads(UDP + "[udp]\nreceive_buffer = 0\n").udp.receive_buffer, 0)
        self.assertError(UDP + "[udp]\nreceive_buffer = -1\n",
                         "sbc.toml:5: udp.receive_buffer: must be an integer 0..1073741824, got -1")

    def test_cdr_batch_interval(self):
        """[cdr] batch_interval defaults to 20 ms and may be 0 to 1 s."""
        self.assertEqual(loads(UDP).cdr.batch_interval, 0.02)
        self.assertEqual(loads(UDP + "[cdr]\nbatch_interval = 0\n").cdr.batch_interval, 0)
        for bad in ("-0.1", "1.5", '"fast"'):
            self.assertError(UDP + f"[cdr]\nbatch_interval = {bad}\n",
                             f"sbc.toml:5: cdr.batch_interval: must be a number from 0 to 1, "
                             f"got {bad}")

    def test_timer_not_finite(self):
        """inf and nan are not usable durations."""
        self.assertError(UDP + "[sip.timers]\nt2 = inf\n",
                         "sbc.toml:5: sip.timers.t2: must be a number > 0, got inf")
        self.assertError(UDP + "[tcp]\nidle_timeout = nan\n",
                         "sbc.toml:5: tcp.idle_timeout: must be a number > 0, got nan")

    def test_tcp_connections(self):
        """Connection limits are positive integers."""
        self.assertError(UDP + "[tcp]\nmax_connections = 0\n",
                         "sbc.toml:5: tcp.max_connections: must be an integer >= 1, got 0")


class ChoiceTests(ErrorCase):
    def test_transport(self):
        """An unknown transport lists the allowed ones."""
        self.assertError('[[listen]]\ntransport = "sctp"\naddress = "127.0.0.1"\n',
                         'sbc.toml:2: listen[0].transport: must be one of "udp", "tcp", '
                         '"tls", got "sctp"')

    def test_transport_is_case_sensitive(self):
        """UDP in capitals is refused rather than guessed."""
        self.assertError('[[listen]]\ntransport = "UDP"\naddress = "127.0.0.1"\n',
                         'sbc.toml:2: listen[0].transport: must be one of "udp", "tcp", '
                         '"tls", got "UDP"')

    def test_log_level(self):
        """An unknown log level lists the allowed ones."""
        self.assertError(UDP + '[sbc]\nlog_level = "verbose"\n',
                         'sbc.toml:5: sbc.log_level: must be one of "debug", "info", '
                         '"warn", "error", got "verbose"')

    def test_min_version_unquoted(self):
        """min_version = 1.3 (a float) is refused; the message shows it unquoted."""
        self.assertError(UDP + "[tls]\nmin_version = 1.3\n",
                         'sbc.toml:5: tls.min_version: must be one of "1.2", "1.3", got 1.3')


class AddressTests(ErrorCase):
    def test_hostname_for_bind_address(self):
        """A listener binds to an IP literal, not a name."""
        self.assertError('[[listen]]\ntransport = "udp"\naddress = "localhost"\n',
                         'sbc.toml:3: listen[0].address: must be an IPv4 or IPv6 address, '
                         'got "localhost"')

    def test_bracketed_ipv6(self):
        """IPv6 is written without brackets."""
        self.assertError('[[listen]]\ntransport = "udp"\naddress = "[::1]"\n',
                         'sbc.toml:3: listen[0].address: must be an IPv4 or IPv6 address, '
                         'got "[::1]"')

    def test_missing_address_points_at_header(self):
        """A missing required key is reported at its table's header line."""
        self.assertError('\n[[listen]]\ntransport = "udp"\n',
                         "sbc.toml:2: listen[0].address: missing; must be an IPv4 or "
                         "IPv6 address")

    def test_missing_transport(self):
        """A listener without transport lists the choices."""
        self.assertError('[[listen]]\naddress = "::"\n',
                         'sbc.toml:1: listen[0].transport: missing; must be one of '
                         '"udp", "tcp", "tls"')

    def test_addresses_are_canonical(self):
        """IPv6 addresses are stored in their compressed form."""
        config = loads('[[listen]]\ntransport = "udp"\naddress = "2001:DB8:0::1"\n')
        self.assertEqual(config.listeners[0].address, "2001:db8::1")

    def test_public_address(self):
        """public_address takes an IP or a hostname, nothing else."""
        for good in ("sbc.example.com", "gw-1", "192.0.2.1", "2001:db8::1"):
            config = loads(UDP + f'public_address = "{good}"\n')
            self.assertEqual(config.listeners[0].public_address, good)
        for bad in ("bad host", "-x.example.com", "192.0.2.300", "a..b", "x" * 64):
            self.assertError(UDP + f'public_address = "{bad}"\n',
                             f'sbc.toml:4: listen[0].public_address: must be an IP '
                             f'address or hostname, got "{bad}"')


class CrossFieldTests(ErrorCase):
    def test_duplicate_listener(self):
        """The same transport, address and port twice is refused at the second one."""
        self.assertError(UDP + "\n" + UDP,
                         "sbc.toml:5: listen[1]: duplicates listen[0] (udp 127.0.0.1:5060)")

    def test_duplicate_listener_spelled_differently(self):
        """Two spellings of one IPv6 address are the same listener."""
        self.assertError("""\
            [[listen]]
            transport = "udp"
            address = "::1"
            [[listen]]
            transport = "udp"
            address = "0:0::1"
            port = 5060
            """, "sbc.toml:4: listen[1]: duplicates listen[0] (udp [::1]:5060)")

    def test_tcp_and_tls_on_one_port(self):
        """tcp and tls cannot share an address and port: both bind a TCP socket."""
        self.assertError("""\
            [[listen]]
            transport = "tcp"
            address = "127.0.0.1"
            port = 5070
            [[listen]]
            transport = "tls"
            address = "127.0.0.1"
            port = 5070
            """, "sbc.toml:8: listen[1].port: 127.0.0.1:5070 is already used by "
                 "listen[0] (tcp); tcp and tls each need their own TCP port")

    def test_udp_and_tcp_share_a_port(self):
        """udp and tcp on the same port is the normal SIP setup."""
        config = loads(UDP + '[[listen]]\ntransport = "tcp"\naddress = "127.0.0.1"\n')
        self.assertEqual([x.port for x in config.listeners], [5060, 5060])

    def test_metrics_on_a_listener_port(self):
        """Metrics cannot bind where a tcp listener already is, unless disabled."""
        text = UDP + '[[listen]]\ntransport = "tcp"\naddress = "127.0.0.1"\n'
        self.assertError(text + "[metrics]\nport = 5060\n",
                         "sbc.toml:8: metrics.port: 127.0.0.1:5060 is already used by "
                         "listen[1] (tcp)")
        config = loads(text + "[metrics]\nenabled = false\nport = 5060\n")
        self.assertFalse(config.metrics.enabled)

    def test_key_without_cert(self):
        """A TLS key alone is refused at the key's line."""
        self.assertError(UDP + '[tls]\nkey = "k.pem"\n',
                         "sbc.toml:5: tls.key: set without tls.cert; set both or neither")

    def test_cert_without_key(self):
        """A TLS cert alone is refused at the [tls] header, where key belongs."""
        self.assertError(UDP + '[tls]\ncert = "c.pem"\n',
                         "sbc.toml:4: tls.key: required when tls.cert is set")

    def test_t2_below_t1(self):
        """T2 caps the retransmit interval, so it cannot be below T1."""
        self.assertError(UDP + "[sip.timers]\nt1 = 2\nt2 = 1.5\n",
                         "sbc.toml:6: sip.timers.t2: must be >= t1 (2), got 1.5")
        self.assertError(UDP + "[sip.timers]\nt2 = 0.25\n",
                         "sbc.toml:5: sip.timers.t2: must be >= t1 (0.5), got 0.25")

    def test_body_larger_than_message(self):
        """The body limit cannot exceed the whole-message limit."""
        self.assertError(UDP + "[sip.limits]\nmax_message_size = 4096\nmax_body_size = 8192\n",
                         "sbc.toml:6: sip.limits.max_body_size: must be <= "
                         "max_message_size (4096), got 8192")
        self.assertError(UDP + "[sip.limits]\nmax_message_size = 4096\n",
                         "sbc.toml:4: sip.limits.max_body_size: must be <= "
                         "max_message_size (4096), got 32768")

    def test_per_ip_above_total(self):
        """A per-IP connection limit above the total makes no sense."""
        self.assertError(UDP + "[tcp]\nmax_connections = 10\nmax_connections_per_ip = 64\n",
                         "sbc.toml:6: tcp.max_connections_per_ip: must be <= "
                         "max_connections (10), got 64")

    def test_server_header_control_characters(self):
        """A Server header value with CR/LF would split the SIP message."""
        self.assertError(UDP + '[sbc]\nserver_header = "sbc\\r\\nX: y"\n',
                         'sbc.toml:5: sbc.server_header: must not contain control '
                         'characters, got "sbc\\r\\nX: y"')


    def test_drain_timeout_bounds(self):
        """A stop waits at most an hour for calls; a negative or fractional wait is refused."""
        self.assertError(UDP + "[sbc]\ndrain_timeout = 3601\n",
                         "sbc.toml:5: sbc.drain_timeout: must be an integer 0..3600, got 3601")
        self.assertError(UDP + "[sbc]\ndrain_timeout = 1.5\n",
                         "sbc.toml:5: sbc.drain_timeout: must be an integer 0..3600, got 1.5")


class ListenRequiredTests(ErrorCase):
    def test_no_listen(self):
        """A file without listeners is refused; there is no line to point at."""
        self.assertError("[sbc]\n", "sbc.toml: listen: at least one [[listen]] table is required")

    def test_empty_listen(self):
        """listen = [] is refused at its line."""
        self.assertError("\nlisten = []\n",
                         "sbc.toml:2: listen: at least one [[listen]] table is required")


class UnknownTests(ErrorCase):
    def test_unknown_key_suggests(self):
        """A misspelt key gets the closest known one."""
        self.assertError(UDP + "prot = 5060\n",
                         'sbc.toml:4: listen[0].prot: unknown key; did you mean "port"?')

    def test_unknown_key_lists_known(self):
        """A key unlike any other lists the known keys."""
        self.assertError(UDP + "[metrics]\nfoo = 1\n",
                         'sbc.toml:5: metrics.foo: unknown key; known: "enabled", '
                         '"address", "port"')

    def test_unknown_table(self):
        """A misspelt table is reported at its header."""
        self.assertError(UDP + "\n[metric]\nport = 1\n",
                         'sbc.toml:5: metric: unknown table; did you mean "metrics"?')

    def test_unknown_subtable(self):
        """A misspelt [sip.*] table is reported as sip.<name>."""
        self.assertError(UDP + "[sip.timer]\nt1 = 1\n",
                         'sbc.toml:4: sip.timer: unknown table; did you mean "timers"?')

    def test_unknown_top_level_key(self):
        """A key outside any table is checked against the table names."""
        self.assertError('log_level = "info"\n' + UDP,
                         'sbc.toml:1: log_level: unknown key; known: "include", "sbc", '
                         '"listen", "tls", "metrics", "sip", "tcp", "udp", "b2bua", "dns", "cdr", "media", "admission", "peer", "table"')

    def test_unknown_quoted_key(self):
        """A key that needs quotes is shown quoted."""
        self.assertError(UDP + '"my port" = 1\n',
                         'sbc.toml:4: listen[0]."my port": unknown key; did you mean "port"?')


class SyntaxTests(ErrorCase):
    def test_syntax_error_line(self):
        """A TOML syntax error keeps tomllib's line and column."""
        self.assertError(UDP + "[tls\n",
                         "sbc.toml:4: syntax: expected ']' at the end of a table "
                         "declaration at column 5")

    def test_syntax_error_at_end(self):
        """An error at the end of the document points at the last line."""
        self.assertError(UDP + 'public_address = """abc\n',
                         "sbc.toml:4: syntax: unterminated string")

    def test_duplicate_table(self):
        """A table declared twice is a syntax error."""
        self.assertError(UDP + "[tcp]\n[tcp]\n",
                         "sbc.toml:5: syntax: cannot declare ('tcp',) twice at column 5")

    def test_error_attributes(self):
        """The error carries file, line, key and reason separately for callers."""
        err = self.assertError(UDP + "port = -1\n",
                               "sbc.toml:4: listen[0].port: must be an integer 0..65535, got -1")
        self.assertEqual((err.file, err.line, err.key, err.why),
                         ("sbc.toml", 4, "listen[0].port",
                          "must be an integer 0..65535, got -1"))


class LocatorTests(ErrorCase):
    def test_brackets_in_strings_and_comments(self):
        """Headers and keys inside strings or comments do not count as definitions."""
        self.assertError('''\
            [sbc]
            state_dir = """
            [[listen]]
            port = 1
            \\""" """  # [[listen]]
            server_header = 'a [[listen]] # b'
            # [[listen]]
            [[listen]]
            transport = "udp"
            address = "127.0.0.1"
            [[listen]]
            transport = "udp"
            address = "127.0.0.1"
            port = 99999
            ''', "sbc.toml:14: listen[1].port: must be an integer 0..65535, got 99999")

    def test_dotted_keys(self):
        """A dotted key at the top level is found at its own line."""
        self.assertError(UDP + "[sip]\ntimers.t1 = 1\nlimits.max_vias = 0\n",
                         "sbc.toml:6: sip.limits.max_vias: must be an integer 1..256, got 0")
        self.assertError('sip.timers.t4 = -1\n' + UDP,
                         "sbc.toml:1: sip.timers.t4: must be a number > 0, got -1")

    def test_inline_tables(self):
        """Keys inside inline tables and arrays of them are found on their line."""
        self.assertError("""\
            listen = [
              {transport = "udp", address = "127.0.0.1"},
              # a comment, ]
              {transport = "tcp", address = "127.0.0.1", port = "x"},
            ]
            """, 'sbc.toml:4: listen[1].port: must be an integer 0..65535, got "x"')
        self.assertError(UDP + "[sip]\ntimers = { t1 = 1, t2 = 0.5 }\n",
                         "sbc.toml:5: sip.timers.t2: must be >= t1 (1), got 0.5")

    def test_quoted_keys(self):
        """A quoted key is matched to its bare spelling."""
        self.assertError(UDP + '"port" = "x"\n',
                         'sbc.toml:4: listen[0].port: must be an integer 0..65535, got "x"')
        self.assertError(UDP + "[tcp]\n'idle_timeout' = 0\n",
                         "sbc.toml:5: tcp.idle_timeout: must be a number > 0, got 0")

    def test_subtables_of_array_entries(self):
        """A [listen.x] table belongs to the latest [[listen]] entry."""
        self.assertError(UDP + "[listen.extra]\na = 1\n",
                         'sbc.toml:4: listen[0].extra: unknown table; known: "transport", '
                         '"address", "port", "public_address"')

    def test_crlf(self):
        """Windows line endings give the same line numbers."""
        self.assertError((UDP + "port = -1\n").replace("\n", "\r\n"),
                         "sbc.toml:4: listen[0].port: must be an integer 0..65535, got -1")

    @settings(max_examples=50, deadline=None)
    @given(st.data())
    def test_unknown_key_anywhere(self, data):
        """However a valid file is laid out, a stray key is reported at its line."""
        sections = [
            ["[sbc]", 'log_level = "info"', 'state_dir = ""'],
            ["[[listen]]", 'transport = "udp"', 'address = "127.0.0.1"'],
            ["[[listen]]", 'transport = "tcp"', 'address = "127.0.0.1"', "port = 5062"],
            ["[tls]", "verify_peer = false", 'min_version = "1.2"'],
            ["[sip.timers]", "t1 = 0.5", "t2 = 4.0"],
            ["[sip.limits]", "max_vias = 32"],
            ["[tcp]", "idle_timeout = 300"],
        ]
        noise = st.sampled_from(["", "# [[listen]] port = 1", "   ", "\t# x = 'y'"])
        lines, owner = [], []
        for i, section in enumerate(data.draw(st.permutations(sections))):
            for line in section:
                lines.append(line)
                owner.append(i)
                for extra in data.draw(st.lists(noise, max_size=2)):
                    lines.append(extra)
                    owner.append(i)
        at = data.draw(st.integers(1, len(lines)))  # after a header at the least
        while lines[at - 1].startswith("#") or not lines[at - 1].strip():
            at -= 1
        lines.insert(at, "zzz_stray = 1")
        with self.assertRaises(ConfigError) as cm:
            loads("\n".join(lines) + "\n")
        self.assertEqual(cm.exception.line, at + 1)
        self.assertTrue(cm.exception.key.endswith("zzz_stray"), cm.exception.key)


class LoadTests(unittest.TestCase):
    def setUp(self):
        # trial's own temp paths land in the working directory under pytest
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name

    def test_missing_file(self):
        """A file that cannot be read names itself and the OS reason."""
        path = os.path.join(self.dir, "none", "sbc.toml")
        with self.assertRaises(ConfigError) as cm:
            load(path)
        self.assertEqual(str(cm.exception), f"{path}: cannot read: No such file or directory")

    def test_not_utf8(self):
        """Bytes that are not UTF-8 are a syntax error at their line."""
        path = os.path.join(self.dir, "sbc.toml")
        Path(path).write_bytes(UDP.encode() + b'[sbc]\nserver_header = "\xff"\n')
        with self.assertRaises(ConfigError) as cm:
            load(path)
        self.assertEqual(str(cm.exception), f"{path}:5: syntax: not valid UTF-8")

    def test_load_reads_file(self):
        """load() gives the same Config as loads() with the path recorded."""
        path = os.path.join(self.dir, "sbc.toml")
        Path(path).write_text(UDP)
        self.assertEqual(load(path), Config.default(path=path))
