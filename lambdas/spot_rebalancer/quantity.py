"""Kubernetes resource quantities ("100m", "1.5Gi", "2e3") as integers, the scheduler's way.

The scheduler compares CPU in millicores and every other resource in whole units, rounding
fractions up. Only what the API server accepts is read: its quantity grammar (ASCII digits, one
optional sign, a binary or decimal SI suffix or a decimal exponent, not both), a magnitude no larger
than 2^63-1 base units, and, for the resource lists the product reads (requests, allocatable,
overhead), no negative values. Anything else raises QuantityError before any arithmetic, so an
8-byte "1e999999" costs nothing. Quantities repeat a lot across a cluster, so parsing is memoised.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import lru_cache
from math import ceil

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}  # powers of two
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# <signedNumber><suffix>, where suffix is a binary SI suffix, a decimal SI suffix or e/E<signedNumber>.
_GRAMMAR = re.compile(
    r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?|[eE][+-]?[0-9]+)", re.ASCII)
# The API server's Quantity holds at most this many base units in magnitude.
MAX_MAGNITUDE = 2**63 - 1
_MAX_DIGITS = len(str(MAX_MAGNITUDE))
_MAX_EXPONENT_CHARS = 5  # "e-999": no quantity the API server keeps needs a longer exponent


class QuantityError(ValueError):
    """A value that is not a quantity the API server would accept for a resource."""


@lru_cache(maxsize=4096)
def parse(quantity: str | int | float) -> Decimal:
    """The exact value of a quantity, in base units (cores, bytes, ...)."""
    if isinstance(quantity, bool):
        raise QuantityError(f"not a Kubernetes quantity: {_shown(quantity)}")
    if isinstance(quantity, (int, float)):
        if isinstance(quantity, float) and not math.isfinite(quantity):
            raise QuantityError(f"not a Kubernetes quantity: {_shown(quantity)}")
        return _in_range(Decimal(str(quantity)), quantity)
    # The API server trims JSON quantities before parsing them.
    match = _GRAMMAR.fullmatch(quantity.strip())
    if match is None:
        raise QuantityError(f"not a Kubernetes quantity: {_shown(quantity)}")
    sign, number, suffix = match.groups()
    if sign == "-":
        raise QuantityError(f"a resource quantity must not be negative, got {_shown(quantity)}")
    binary = _BINARY.get(suffix, 0)
    if suffix[:1] in ("e", "E") and suffix not in ("E", "Ei"):  # an exponent ("E" is exa, "Ei" exbi)
        if len(suffix) > _MAX_EXPONENT_CHARS:  # reading a huge exponent is itself the cost to avoid
            raise QuantityError(f"quantity {_shown(quantity)} has an exponent the API server refuses")
        exponent = int(suffix[1:])
    else:
        exponent = _DECIMAL.get(suffix, 0)
    # Out of range by the digits alone, before any arithmetic: the integer part's digits, the
    # decimal exponent and the binary suffix's (2^10 < 10^3.02) bound the number of digits.
    whole_digits = len(number.split(".")[0].lstrip("0"))
    if whole_digits and whole_digits + exponent + math.ceil(binary * 0.30103) > _MAX_DIGITS + 1:
        raise QuantityError(f"quantity {_shown(quantity)} is larger than the API server accepts")
    return _in_range(Decimal(number).scaleb(exponent) * (2**binary), quantity)


def _shown(quantity: str | int | float) -> str:
    text = repr(quantity)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _in_range(value: Decimal, quantity: str | int | float) -> Decimal:
    if value < 0:
        raise QuantityError(f"a resource quantity must not be negative, got {_shown(quantity)}")
    if value > MAX_MAGNITUDE:
        raise QuantityError(f"quantity {_shown(quantity)} is larger than the API server accepts")
    return value


@lru_cache(maxsize=4096)
def milli(quantity: str | int | float) -> int:
    """Thousandths of the base unit, rounded up (how the scheduler counts CPU)."""
    return ceil(parse(quantity) * 1000)


@lru_cache(maxsize=4096)
def units(quantity: str | int | float) -> int:
    """Whole base units, rounded up (how the scheduler counts memory, storage, pods, extended)."""
    return ceil(parse(quantity))
