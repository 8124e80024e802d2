"""What the cloud stores and serves: the range of integers it accepts from outside.

The wire contract makes ``seq``, ``epoch`` and every timestamp an unsigned 64-bit integer
(``[0, 2**64)``). The cloud keeps them in signed 64-bit columns (SQLite ``INTEGER``,
PostgreSQL ``BIGINT``), computes with them in SQL (``seq + 1``, windows of seqs) and serves
them as JSON numbers, which JavaScript reads as IEEE doubles. It therefore accepts only
``[0, 2**53)``: exact in every one of those places, with room for any arithmetic on top.

That is no practical limit: a gateway sending one message a second reaches 2**53 after
285 million years, and 2**53 ms is the year 287,396. A value outside the range is a broken or
hostile sender; ingest rejects the message as ``out_of_range`` (counted, never stored), and
the API answers a query parameter outside it with a 422.
"""

from __future__ import annotations

MAX_INT = 2**53 - 1
"""The largest seq, epoch, timestamp or id the cloud accepts (9,007,199,254,740,991)."""

MAX_CODE = 0xFFFF
"""Status and fault codes are 16-bit Modbus registers; anything else is not a code."""


def storable(value: int) -> bool:
    """Whether `value` is a seq, epoch, timestamp or id the cloud can keep."""
    return 0 <= value <= MAX_INT


def code(value: object) -> int | None:
    """`value` as a status or fault code (an integral number 0..65535), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)
    return number if 0 <= number <= MAX_CODE else None
