"""Kubernetes resource quantities ("100m", "1.5Gi", "2e3") as integers, the scheduler's way.

The scheduler compares CPU in millicores and every other resource in whole units, rounding
fractions up. Quantities repeat a lot across a cluster, so parsing is memoised.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import lru_cache
from math import ceil

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


@lru_cache(maxsize=4096)
def parse(quantity: str | int | float) -> Decimal:
    """The exact value of a quantity, in base units (cores, bytes, ...)."""
    if isinstance(quantity, (int, float)):
        return Decimal(str(quantity))
    text = quantity.strip()
    try:
        if text[-2:] in _BINARY:
            value = Decimal(text[:-2]) * _BINARY[text[-2:]]
        elif text[-1:] in _DECIMAL:
            # A trailing letter is a suffix ("2E" is exa); "1e3" ends in a digit, an exponent.
            value = Decimal(text[:-1]) * _DECIMAL[text[-1]]
        else:
            value = Decimal(text)
    except (InvalidOperation, IndexError):
        raise QuantityError(f"not a Kubernetes quantity: {quantity!r}") from None
    if not value.is_finite():
        raise QuantityError(f"not a Kubernetes quantity: {quantity!r}")
    return value


@lru_cache(maxsize=4096)
def milli(quantity: str | int | float) -> int:
    """Thousandths of the base unit, rounded up (how the scheduler counts CPU)."""
    return ceil(parse(quantity) * 1000)


@lru_cache(maxsize=4096)
def units(quantity: str | int | float) -> int:
    """Whole base units, rounded up (how the scheduler counts memory, storage, pods, extended)."""
    return ceil(parse(quantity))
