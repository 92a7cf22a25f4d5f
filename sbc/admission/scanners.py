"""Scanner detection by User-Agent, sans-I/O.

Toolkits that sweep the internet for SIP servers announce themselves in the
User-Agent header unless the operator of the sweep changes it, and most never
do: SIPVicious's svmap, svwar and svcrack send `friendly-scanner` by default,
sipcli and the VaxSIP SDK send their names. Dropping these silently (no
response at all) keeps the SBC off the scanners' lists of live targets.

    scanners = Scanners()                 # DEFAULT_USER_AGENTS
    scanners.match("friendly-scanner")    # -> "friendly-scanner"
    scanners.match("Asterisk PBX 20.1")   # -> None

A pattern matches when it is a case-insensitive substring of the
User-Agent; `match` returns the pattern as configured so that logs and the
`pattern` metric label show the operator's own spelling. The User-Agent is
case-folded once and searched for each pattern as a plain substring, longest
pattern first (far cheaper than one case-insensitive regex alternation).

Only the User-Agent is inspected: a scanner that changed it is left to the
ACL, digest authentication and automatic bans, which do not depend on what a
peer says about itself.
"""

from ..errors import ConfigError

__all__ = ["DEFAULT_USER_AGENTS", "Scanners"]

# The names in Kamailio's default kamailio.cfg (route[REQINIT]: "friendly",
# "scanner", "sipcli", "sipvicious", "VaxSIPUserAgent", "pplsip"), made
# specific enough not to hit real phones ("scanner" alone would), plus the
# tools named in the iptables string-match lists used with fail2ban setups
# (e.g. paulseward/sip-hardening siptables.sh: iWar, sip-scan, sipscan, SIVuS,
# siparmyknife, sundayddr, friendly-request). Left out on purpose: sipsak
# (an administrator's tool for OPTIONS pings), "PortSIP VoIP SDK" and other
# SDK names that real softphones are built on.
DEFAULT_USER_AGENTS = (
    "friendly-scanner",
    "friendly-request",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "VaxIPUserAgent",
    "pplsip",
    "sundayddr",
    "iWar",
    "sip-scan",
    "sipscan",
    "SIVuS",
    "siparmyknife",
)


class Scanners:
    """Case-insensitive substring match of User-Agent against `patterns`."""

    def __init__(self, patterns=DEFAULT_USER_AGENTS, *, key="admission.scanners"):
        if isinstance(patterns, str):
            raise ConfigError("must be a list of strings, not one string", key=key)
        kept = []
        seen = set()
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ConfigError(f"{pattern!r} is not a string", key=key)
            if not pattern.strip():
                raise ConfigError("an empty pattern would match every User-Agent", key=key)
            folded = pattern.casefold()
            if folded not in seen:
                seen.add(folded)
                kept.append(pattern)
        self.patterns = tuple(kept)
        # Longest first so that the more specific of two patterns found is
        # reported ("sipvicious" rather than "sipv").
        self._folded = tuple(sorted(((p.casefold(), p) for p in kept),
                                    key=lambda item: -len(item[0])))

    def match(self, user_agent):
        """The configured pattern found in `user_agent`, or None."""
        if not user_agent or not self._folded:
            return None
        folded = user_agent.casefold()
        for needle, pattern in self._folded:
            if needle in folded:
                return pattern
        return None

    def __repr__(self):
        return f"Scanners({list(self.patterns)!r})"
