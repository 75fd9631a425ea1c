"""The dev profile's outbox: `.eml` files for email, JSON lines for the rest, each once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

import pytest

from gateway.providers.base import Address, Delivered, Permanent
from gateway.providers.console import ConsoleAdapter, KeyRecord
from tests.providers.conformance import message
from tests.providers.outbox import per_delivery, read_eml, sent

ADA = Address("email", "ada@example.com")
PHONE = Address("phone", "+33612345678")
IOS = Address("device", "ios-token-0123456789", platform="ios")
ANDROID = Address("device", "android-token-9876543210", platform="android")


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


async def test_email_is_an_eml_file_a_mail_client_opens(tmp_path: Path) -> None:
    adapter = ConsoleAdapter("sendgrid", "email", tmp_path)
    msg = dataclasses.replace(
        message("email"), headers={"List-Unsubscribe": "<https://notigate.example/u/1>"}
    )
    result = await adapter.send(msg, ADA, idempotency_key=msg.delivery_id)
    assert isinstance(result, Delivered) and result.provider_message_id
    (path,) = (tmp_path / "email").iterdir()
    assert path.name == f"{result.provider_message_id}.eml" and path.name.startswith(msg.delivery_id)
    assert "ada" not in path.name  # the name shows no address
    mail = read_eml(path)
    assert (mail["Subject"], mail["To"], mail["From"]) == (
        msg.fields["subject"],
        ADA.value,
        "Notigate <no-reply@notigate.example>",
    )
    assert mail["Message-ID"] == f"<{msg.delivery_id}@notigate.example>"
    assert mail["X-Notigate-Delivery"] == msg.delivery_id
    assert mail["List-Unsubscribe"] == "<https://notigate.example/u/1>"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and text.get_content().rstrip("\n") == msg.fields["text"]
    assert html is not None and html.get_content().rstrip("\n") == msg.fields["html"]


async def test_other_channels_are_json_lines_one_per_recipient(tmp_path: Path) -> None:
    push = ConsoleAdapter("fcm", "push", tmp_path)
    sms = ConsoleAdapter("twilio", "sms", tmp_path)
    msg = message("push")
    for device in (IOS, ANDROID):
        await push.send(msg, device, idempotency_key=msg.delivery_id)
    await sms.send(message("sms", "dlv_sms"), PHONE, idempotency_key="dlv_sms")
    assert sorted(_files(tmp_path)) == ["push.jsonl", "sms.jsonl"]
    lines = [json.loads(line) for line in (tmp_path / "push.jsonl").read_text().splitlines()]
    assert [(r["delivery_id"], r["to"]["platform"], r["provider"]) for r in lines] == [
        (msg.delivery_id, "ios", "fcm"),
        (msg.delivery_id, "android", "fcm"),
    ]
    assert lines[0]["fields"] == msg.fields
    assert {(s.channel, s.to) for s in sent(tmp_path)} == {
        ("push", IOS.value),
        ("push", ANDROID.value),
        ("sms", PHONE.value),
    }


async def test_a_resend_writes_nothing_new(tmp_path: Path) -> None:
    email, sms = message("email"), message("sms", "dlv_sms")
    first = ConsoleAdapter("sendgrid", "email", tmp_path), ConsoleAdapter("twilio", "sms", tmp_path)
    results = [
        await first[0].send(email, ADA, idempotency_key=email.delivery_id),
        await first[1].send(sms, PHONE, idempotency_key=sms.delivery_id),
    ]
    before = _files(tmp_path)
    # The same adapters, and fresh ones (a new worker process after a crash), send again.
    again = ConsoleAdapter("sendgrid", "email", tmp_path), ConsoleAdapter("twilio", "sms", tmp_path)
    for adapters in (first, again):
        resent = [
            await adapters[0].send(email, ADA, idempotency_key=email.delivery_id),
            await adapters[1].send(sms, PHONE, idempotency_key=sms.delivery_id),
        ]
        assert resent == results  # reported delivered, with the same id
    assert _files(tmp_path) == before
    assert per_delivery(tmp_path) == {email.delivery_id: 1, sms.delivery_id: 1}


async def test_two_writers_racing_never_duplicate_or_tear_a_line(tmp_path: Path) -> None:
    """Two adapters (as two worker processes would have) each send every delivery twice,
    each from its own writer thread; each (delivery, recipient) lands once, every line whole."""
    a, b = ConsoleAdapter("fcm", "push", tmp_path), ConsoleAdapter("apns", "push", tmp_path)
    deliveries = [f"dlv_{i:03d}" for i in range(300)]

    async def send(adapter: ConsoleAdapter, delivery: str, device: Address) -> None:
        await adapter.send(message("push", delivery), device, idempotency_key=delivery)

    await asyncio.gather(
        *(
            send(adapter, delivery, device)
            for _ in range(2)
            for delivery in deliveries
            for device in (IOS, ANDROID)
            for adapter in (a, b)
        )
    )
    raw = (tmp_path / "push.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.splitlines()]  # every line parses: none torn
    keys = [line["key"] for line in lines]
    assert len(keys) == len(set(keys)) == len(deliveries) * 2
    assert per_delivery(tmp_path) == dict.fromkeys(deliveries, 2)


async def test_a_line_a_crashed_writer_left_unfinished_is_cut(tmp_path: Path) -> None:
    adapter = ConsoleAdapter("twilio", "sms", tmp_path)
    await adapter.send(message("sms", "dlv_1"), PHONE, idempotency_key="dlv_1")
    journal = tmp_path / "sms.jsonl"
    with journal.open("ab") as file:
        file.write(b'{"key": "dlv_2-abc", "delivery_id": "dlv_2", "chan')  # killed mid-write
    restarted = ConsoleAdapter("twilio", "sms", tmp_path)
    await restarted.send(message("sms", "dlv_2"), PHONE, idempotency_key="dlv_2")
    assert [s.delivery_id for s in sent(tmp_path)] == ["dlv_1", "dlv_2"]


async def test_the_log_line_masks_the_address(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for adapter, msg, address in (
        (ConsoleAdapter("sendgrid", "email", tmp_path), message("email"), ADA),
        (ConsoleAdapter("twilio", "sms", tmp_path), message("sms"), PHONE),
    ):
        await adapter.send(msg, address, idempotency_key=msg.delivery_id)
        await adapter.send(msg, address, idempotency_key=msg.delivery_id)
    assert "a***@example.com" in caplog.text and "+3361***5678" in caplog.text
    assert ADA.value not in caplog.text and PHONE.value not in caplog.text


async def test_an_email_address_no_header_can_carry_is_refused(tmp_path: Path) -> None:
    adapter = ConsoleAdapter("sendgrid", "email", tmp_path)
    msg = message("email")
    result = await adapter.send(msg, Address("email", "ada@example..com"), idempotency_key=msg.delivery_id)
    assert isinstance(result, Permanent) and (result.code, result.address_invalid) == (
        "invalid_address",
        True,
    )
    assert sent(tmp_path) == []


def test_the_key_record_answers_for_every_key_across_its_merges() -> None:
    """The digests of 10,000 keys pass through two merges into the sorted array; each
    added key is found, and none of 10,000 others is."""
    record = KeyRecord()
    added = [f"dlv_{i:05d}-tag" for i in range(10_000)]
    for key in added:
        assert key not in record
        record.add(key)
    assert len(record) == len(added)
    assert all(key in record for key in added)
    assert not any(f"other_{i:05d}-tag" in record for i in range(10_000))
    record.clear()
    assert len(record) == 0 and added[0] not in record
