"""The back-to-back user agent: calls made of two legs (pure, sans-I/O)."""
