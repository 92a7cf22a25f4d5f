"""sbc: SIP trunking gateway and session border controller."""

__version__ = "0.1.0"
