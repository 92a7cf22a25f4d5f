"""Deterministic identifiers for tests: the n-th id is its prefix and n."""


class Ids:
    """Stands in for sbc.service.RandomIds: tag(), branch(), nonce(), call_id()."""

    def __init__(self, tag="t", branch="z9hG4bKsbc", nonce="n", call_id="cid"):
        self.n = 0
        self.prefixes = {"tag": tag, "branch": branch, "nonce": nonce, "call_id": call_id}

    def _next(self, kind):
        self.n += 1
        return f"{self.prefixes[kind]}{self.n}"

    def tag(self):
        return self._next("tag")

    def branch(self):
        return self._next("branch")

    def nonce(self):
        return self._next("nonce")

    def call_id(self):
        return self._next("call_id")
