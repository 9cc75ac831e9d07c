"""Showing amounts of money: every digit a cap, a cost or a balance has, never rounded to cents.

Costs of model calls run to fractions of a cent, and caps are set as small as ``0.005``: a
fixed ``:.2f`` would show that cap as ``0.01`` and a ``:.4f`` a call of ``$0.00004`` as
``0.0000``. :func:`usd` keeps up to eight decimals (a millionth of a cent), drops float noise
beyond them, and shows at least cents.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

_PLACES = Decimal("1e-8")


def usd(amount: float | int | Decimal, *, symbol: bool = True) -> str:
    """``0.005`` -> ``$0.005``, ``5`` -> ``$5.00``, ``0.1 + 0.2`` -> ``$0.30``."""
    exact = Decimal(repr(float(amount))) if not isinstance(amount, Decimal) else amount
    rounded = exact.quantize(_PLACES, rounding=ROUND_HALF_EVEN)
    whole, _, cents = format(abs(rounded).normalize(), "f").partition(".")
    sign = "-" if rounded < 0 else ""
    return f"{sign}{'$' if symbol else ''}{whole}.{cents.ljust(2, '0')}"
