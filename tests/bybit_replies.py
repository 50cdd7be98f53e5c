"""HTTP replies as Bybit's V5 REST endpoints (or a broken proxy in front of them) might send them, for the
property tests of the market-data client and the order client, and an httpx transport that plays them back."""

from __future__ import annotations

import json

import httpx
from hypothesis import strategies as st


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
