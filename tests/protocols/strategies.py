"""Hypothesis strategies for valid messages (shared by the message and COSE tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocols.messages import (
    MAX_DETAIL_DEPTH,
    Ack,
    AckState,
    Birth,
    Command,
    CommandName,
    Event,
    EventKind,
    Health,
    Quality,
    Reading,
    RejectReason,
    TelemetryBatch,
)

device_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{2,62}", fullmatch=True)
uint64 = st.integers(0, 2**64 - 1)
texts = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)
numbers = st.integers(-(2**64), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | texts
uuids = st.uuids().map(str)


def detail_values(depth: int = MAX_DETAIL_DEPTH) -> st.SearchStrategy[Any]:
    """Scalars, or tuples/mappings nested at most `depth` deep."""
    if depth == 0:
        return scalars
    inner = st.deferred(lambda: detail_values(depth - 1))
    return (
        scalars | st.lists(inner, max_size=3).map(tuple) | st.dictionaries(texts, inner, max_size=3)
    )


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    """The flat uplink header fields."""
    return {
        "dev": draw(device_ids),
        "epoch": draw(uint64),
        "seq": draw(uint64),
        "ts": draw(uint64),
        "sync": draw(st.booleans()),
    }


readings = st.builds(Reading, names, uint64, scalars, st.sampled_from(Quality))
batches = st.builds(
    lambda h, r: TelemetryBatch(**h, readings=tuple(r)), headers(), st.lists(readings, max_size=8)
)
events = st.builds(
    lambda h, k, d: Event(**h, kind=k, detail=d),
    headers(),
    st.sampled_from(EventKind),
    st.dictionaries(texts, detail_values(), max_size=4),
)
births = st.builds(
    lambda h, v, i, x, c: Birth(**h, agent_version=v, map_id=i, map_hash=x, capabilities=tuple(c)),
    headers(),
    names,
    names,
    names,
    st.lists(names, max_size=4),
)
healths = st.builds(
    lambda h, m, a: Health(**h, modem=m, agent=a),
    headers(),
    st.dictionaries(texts, scalars, max_size=5),
    st.dictionaries(texts, numbers, max_size=5),
)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    """An ack whose reason fits its state."""
    state = draw(st.sampled_from(AckState))
    reason = None
    if state is AckState.REJECTED or (state is AckState.FAILED and draw(st.booleans())):
        reason = draw(st.sampled_from(RejectReason))
    return Ack(
        **draw(headers()),
        command_id=draw(uuids),
        state=state,
        reason=reason,
        observed=draw(st.dictionaries(texts, scalars, max_size=4)),
    )


@st.composite
def commands(draw: st.DrawFn) -> Command:
    """A command with exp after iat."""
    iat = draw(st.integers(0, 2**64 - 2))
    return Command(
        id=draw(uuids),
        dev=draw(device_ids),
        name=draw(st.sampled_from(CommandName)),
        args=draw(st.dictionaries(texts, scalars, max_size=4)),
        iat=iat,
        exp=draw(st.integers(iat + 1, 2**64 - 1)),
    )


uplink_messages = batches | events | births | healths | acks()
messages = uplink_messages | commands()
