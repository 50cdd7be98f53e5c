"""JSON values and HTTP replies as Bybit's V5 endpoints (or a broken proxy in front of them) might send them,
for the property tests of every parser of Bybit's replies, and an httpx transport that plays them back."""

from __future__ import annotations

import json

import httpx
from hypothesis import strategies as st

# Numbers as an exchange (or a broken proxy) might spell them: plain, out of range, not finite, Unicode
# digits ("²" passes str.isdigit, int() refuses it), Python-only spellings, more digits than int() takes.
NUMBER_SPELLINGS = (
    "0", "0.001", "100.5", "-1", "1e50", "1e400", "-1e400", "nan", "NaN", "inf", "Infinity", "-inf", "1_000",
    " 7 ", "²", "١٢٣", "9" * 5000, "0x10", "", "abc", "1700000000000", " 1700000000000 ", "1700000000000000000",
)  # fmt: skip
NUMBERISH = st.sampled_from(NUMBER_SPELLINGS)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    NUMBERISH,
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=8),
    max_leaves=20,
)


@st.composite
def reply_bodies(draw, results, ret_codes, values, scalars):
    """Body bytes: mostly the ``{retCode, retMsg, result}`` envelope around a drawn ``result`` (retCode 0,
    one of ``ret_codes`` or any scalar), else any JSON from ``values``, else any bytes."""
    kind = draw(st.sampled_from(["envelope", "envelope", "envelope", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    if kind == "json":
        return json.dumps(draw(values)).encode()
    code = draw(st.one_of(st.just(0), st.just(0), st.sampled_from(ret_codes), scalars, values))
    envelope = {"retCode": code, "retMsg": draw(st.text(max_size=8)), "result": draw(results)}
    if draw(st.booleans()):
        envelope["time"] = draw(scalars)
    return json.dumps(envelope).encode()  # json writes NaN/Infinity, which Python's reader accepts


def playback(answers) -> httpx.MockTransport:
    """Answers each request with the next ``(status, body, headers)``; HTTP 503 once they run out."""
    answers = iter(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        status, body, headers = next(answers, (503, b"", {}))
        return httpx.Response(status, content=body, headers=headers)

    return httpx.MockTransport(handle)
