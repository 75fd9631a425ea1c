"""SMS segment counting (GSM-7 vs UCS-2) and push payload size."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.templating.limits import GSM7_BASIC, GSM7_EXTENSION, push_payload_bytes, sms_length


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 162, 2),
        # 152 plain + one escape pair: the pair does not fit the first part's last septet.
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),
        ("é" * 10, "GSM-7", 10, 1),  # é is in the GSM alphabet
        ("ç" + "a" * 69, "UCS-2", 70, 1),  # ç is not (only Ç is): the whole message turns UCS-2
        ("ç" + "a" * 70, "UCS-2", 71, 2),
        ("😀" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 units
        ("😀" * 36, "UCS-2", 72, 2),
        ("a" * 66 + "😀" + "a" * 10, "UCS-2", 78, 2),
        ("", "GSM-7", 0, 1),
    ],
)
def test_sms_length(text: str, encoding: str, units: int, segments: int) -> None:
    length = sms_length(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


@given(st.text(alphabet=sorted(GSM7_BASIC | GSM7_EXTENSION), max_size=800))
def test_gsm_segments_hold_the_whole_text(text: str) -> None:
    """Invariant: the segments are the fewest that hold the text at 153 septets a part, never
    fewer than the septets need and never more than one extra per escape pair."""
    length = sms_length(text)
    assert length.encoding == "GSM-7"
    if length.units <= 160:
        assert length.segments == 1
    else:
        least = -(-length.units // 153)
        assert least <= length.segments <= least + sum(c in GSM7_EXTENSION for c in text)


def test_push_payload_counts_what_the_adapter_sends_in_utf8() -> None:
    """Notification and data, plus the ids the FCM adapter adds to data and its urgent settings."""
    import json

    small = push_payload_bytes({"title": "Hi", "body": "there", "data": {"k": "v"}})
    sent = {
        "notification": {"title": "Hi", "body": "there"},
        "data": {
            "k": "v",
            "notigate_delivery_id": "d_" + "0" * 26,
            "notigate_notification_id": "n_" + "0" * 26,
        },
        "android": {"priority": "high"},
        "apns": {"headers": {"apns-priority": "10"}},
    }
    assert small == len(json.dumps(sent, separators=(",", ":")))
    assert push_payload_bytes({"title": "é"}) == push_payload_bytes({"title": "e"}) + 1
