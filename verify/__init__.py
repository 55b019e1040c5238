"""verify: theory against simulation (checks, property-based tests, reports).

See docs/verify.md.
"""

__all__: list[str] = []
