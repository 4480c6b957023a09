"""PII masking: each kind is masked and counted; look-alikes are left alone."""

from __future__ import annotations

import pytest

from tasks.clean.pii import mask_pii


@pytest.mark.parametrize(
    ("text", "masked", "kind"),
    [
        ("Write to jane.doe+news@mail.example.co.uk today.", "Write to <EMAIL> today.", "email"),
        ("The server at 192.168.1.20 answered.", "The server at <IP_ADDRESS> answered.", "ip_address"),
        ("Ping 8.8.8.8.", "Ping <IP_ADDRESS>.", "ip_address"),
        ("Use 2001:db8::8a2e:370:7334 or fe80::1 now.", "Use <IP_ADDRESS> or <IP_ADDRESS> now.", "ip_address"),
        ("Call +44 20 7946 0958 after six.", "Call <PHONE> after six.", "phone"),
        ("Call (555) 123-4567 or 555-123-4567.", "Call <PHONE> or <PHONE>.", "phone"),
        ("Ruf an: 030 1234567. Appelez le 06 12 34 56 78.", "Ruf an: <PHONE>. Appelez le <PHONE>.", "phone"),
    ],
)
def test_masks_each_kind(text: str, masked: str, kind: str) -> None:
    out, counts = mask_pii(text)
    assert out == masked
    assert counts[kind] == masked.count("<") and sum(counts.values()) == counts[kind]


@pytest.mark.parametrize(
    "text",
    [
        "Upgrade from version 1.2.3 to 2.10.4 before 2024.",
        "The value 10.0.0.256 is not an address, nor is v1.2.3.4 or 1.2.3.4.5.",
        "In 1999 the town had 1234567 people and a budget of 1,000,000 euros.",
        "The meeting ran from 12:30:45 until 2020-01-15, see std::vector and dead::beef.",
        "Dates such as 01.02.2020 and scores such as 3-2 stay.",
        "Contact us at the front desk.",
    ],
)
def test_leaves_look_alikes(text: str) -> None:
    assert mask_pii(text) == (text, {"email": 0, "ip_address": 0, "phone": 0})


def test_kinds_switch_off() -> None:
    text = "Mail a@b.org from 10.1.2.3 or call +1 202 555 0143."
    out, counts = mask_pii(text, emails=False, phones=False)
    assert out == "Mail a@b.org from <IP_ADDRESS> or call +1 202 555 0143."
    assert counts == {"email": 0, "ip_address": 1, "phone": 0}
    assert mask_pii(text)[1] == {"email": 1, "ip_address": 1, "phone": 1}
