"""Masks personal data in text: e-mail addresses, IP addresses (v4 and v6) and phone numbers.

Regexes are compiled once at import; candidates are validated (IPv4 octets up to 255, IPv6 through `ipaddress`,
7 to 15 digits in a phone number), so look-alikes such as version strings, years, dates and plain numbers stay.
"""

from __future__ import annotations

import ipaddress
import re

EMAIL_TOKEN, IP_TOKEN, PHONE_TOKEN = "<EMAIL>", "<IP_ADDRESS>", "<PHONE>"

_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# not inside a longer dotted run: "1.2.3.4.5" is no address, and neither is "v1.2.3.4"
_IPV4_RE = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\.?\d|\w)")
_IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
# +CC numbers, NANP "(555) 123-4567" / "555-123-4567", and trunk-prefixed European "030 1234567", "06 12 34 56 78"
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{1,4}){1,5}"
    r"|\(\d{3}\)\s?\d{3}[\s.-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}"
    r"|0\d{1,4}(?:[\s/-]\d{2,8}){1,4})(?![\w])"
)


def _ipv6(match: re.Match[str]) -> str:
    candidate = match.group(0)
    # "abc::def" or "12:30:45" parse or nearly do: an address must hold a digit and parse as IPv6
    if not any(c.isdigit() for c in candidate):
        return candidate
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return candidate
    return IP_TOKEN


def _phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    return PHONE_TOKEN if 7 <= digits <= 15 else match.group(0)


def mask_pii(text: str, *, emails: bool = True, ips: bool = True, phones: bool = True) -> tuple[str, dict[str, int]]:
    """Replaces e-mail addresses, IP addresses and phone numbers with placeholder tokens.

    Args:
        text: the document.
        emails: mask e-mail addresses as `<EMAIL>`.
        ips: mask IPv4 and IPv6 addresses as `<IP_ADDRESS>`.
        phones: mask phone numbers as `<PHONE>`.

    Returns:
        (masked text, {"email": n, "ip_address": n, "phone": n}) with the number of masks of each kind.
    """
    counts = {"email": 0, "ip_address": 0, "phone": 0}
    # e-mails first (their domains may look like other things), then addresses, then phone numbers; each regex
    # runs only when the character it needs is present, which skips most documents for most kinds
    if emails and "@" in text:
        text, counts["email"] = _EMAIL_RE.subn(EMAIL_TOKEN, text)
    if ips and "." in text:
        text, counts["ip_address"] = _IPV4_RE.subn(IP_TOKEN, text)
    if ips and "::" in text or text.count(":") >= 7:
        before = text.count(IP_TOKEN)
        text = _IPV6_RE.sub(_ipv6, text)
        counts["ip_address"] += text.count(IP_TOKEN) - before
    if phones:
        before = text.count(PHONE_TOKEN)
        text = _PHONE_RE.sub(_phone, text)
        counts["phone"] = text.count(PHONE_TOKEN) - before
    return text, counts
