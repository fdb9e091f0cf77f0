"""Personal data in text: regular expressions, each with a validation step where one cuts false
positives (the Chinese resident ID's check digit and birth date, US SSN number ranges, Luhn for
card numbers, digit counts for phone numbers). Pure functions, no I/O.

    spans = find_pii("mail me at ann@example.com")   # [PiiSpan("email", 11, 26)]
    text, kinds = redact("mail me at ann@example.com")  # ("mail me at [email]", ["email"])
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

PII_KINDS = ("email", "phone", "id_number", "card", "address")


@dataclass(frozen=True)
class PiiSpan:
    kind: str
    start: int
    end: int


EMAIL = re.compile(r"(?<![A-Za-z0-9_.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?![A-Za-z0-9_])")

# Lookarounds name ASCII classes: in Python \w matches Chinese characters too ("发到a@b.cn").
# Chinese mobile numbers: 1[3-9]x xxxx xxxx, optionally +86 / 0086, separators space or dash.
CN_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?!\d)")
# Chinese landlines: 0xx-xxxxxxxx / 0xxx-xxxxxxx (area code with a separator, or in brackets).
CN_LANDLINE = re.compile(r"(?<!\d)(?:\(0\d{2,3}\)\s?|0\d{2,3}-)\d{7,8}(?!\d)")
# North American and international numbers: +CC groups, (xxx) xxx-xxxx, xxx-xxx-xxxx, xxx.xxx.xxxx.
NANP = re.compile(r"(?<![A-Za-z0-9_+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)")
INTERNATIONAL = re.compile(r"(?<![A-Za-z0-9_+])\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?!\d)")

CN_ID = re.compile(r"(?<![\dA-Za-z])[1-9]\d{16}[\dXx](?![\dA-Za-z])")
SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\W{0,5}(\d{9})(?!\d)")
CARD = re.compile(r"(?<![\d+])(?:\d[ -]?){12,18}\d(?!\d)")

_STREET_SUFFIX = (r"street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|way|place|pl|"
                  r"terrace|circle|parkway|pkwy|highway|hwy|square|sq")
EN_ADDRESS = re.compile(
    rf"(?i)\b\d{{1,6}}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][a-z'.-]+\s+){{1,4}}(?:{_STREET_SUFFIX})\b\.?"
    r"(?:,?\s*(?:apt|apartment|unit|suite|ste|#)\.?\s*[\w-]+)?")
# A capitalised street name is what separates "12 Oak Street" from "3 long roads": check it case-sensitively.
_EN_ADDRESS_NAME = re.compile(r"\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?[A-Z]")
ZH_ADDRESS = re.compile(
    r"(?:[\u4e00-\u9fff]{2,8}(?:省|自治区|市))?(?:[\u4e00-\u9fff]{1,8}(?:市|区|县|镇|乡))?"
    r"[\u4e00-\u9fff]{1,10}(?:路|街|大道|道|巷|弄|胡同)\s?\d{1,5}\s?(?:号|號)"
    r"(?:[\u4e00-\u9fff\d]{0,6}?(?:栋|幢|楼|单元|室|号楼))*(?:\d{1,5}(?:室|号))?")

# Numbers and handles that are personal only by what precedes them: "QQ 12345678", "微信号: abc_123",
# "student ID 20231234", "passport E12345678", "phone 4155550132" (no separators).
CONTEXT_ID = re.compile(
    r"(?i)(?:\b(?:qq|wechat|weixin|wx|line id|student\s*(?:id|number|no\.?)|passport(?:\s*(?:number|no\.?))?"
    r"|driver'?s?\s*licen[cs]e(?:\s*(?:number|no\.?))?)|微信号?|学号|护照号?码?|准考证号?|驾驶证号?|身份证号?码?)"
    r"\s*(?:is|是|为)?\s*[:：#]?\s*([A-Za-z][A-Za-z0-9_-]{5,19}|[A-Z]{0,2}\d{5,12})(?![A-Za-z0-9_])")
CONTEXT_PHONE = re.compile(
    r"(?i)(?:\b(?:phone|cell|mobile|tel|telephone|call me|text me|whatsapp|number)\b|电话|手机号?|联系方式)"
    r"\D{0,12}?(\+?\d{7,15})(?!\d)")
# Chinese residential compounds and building/unit/room: "阳光花园3栋2单元502室", "幸福小区12号楼301".
ZH_COMPOUND = re.compile(
    r"[\u4e00-\u9fff]{2,10}(?:小区|花园|公寓|大厦|新村|家园|苑|社区)\s?\d{1,3}\s?(?:栋|幢|号楼|座)"
    r"(?:\s?\d{1,2}\s?单元)?(?:\s?\d{2,5}\s?(?:室|号)?)?")
PO_BOX = re.compile(r"(?i)\bP\.?\s?O\.?\s?Box\s+\d{1,6}\b")

_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"


def valid_cn_id(number: str) -> bool:
    """The GB 11643 check digit and a real birth date between 1900 and today."""
    number = number.upper()
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _CN_ID_WEIGHTS))
    if _CN_ID_CHECK[total % 11] != number[17]:
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def valid_ssn(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def find_pii(text: str) -> list[PiiSpan]:
    """Every personal-data span, longest first where they overlap, in text order."""
    spans: list[PiiSpan] = []
    for m in EMAIL.finditer(text):
        spans.append(PiiSpan("email", m.start(), m.end()))
    for m in CN_ID.finditer(text):
        if valid_cn_id(m.group(0)):
            spans.append(PiiSpan("id_number", m.start(), m.end()))
    for m in SSN.finditer(text):
        if valid_ssn(*m.groups()):
            spans.append(PiiSpan("id_number", m.start(), m.end()))
    for m in SSN_CONTEXT.finditer(text):
        number = m.group(1)
        if valid_ssn(number[:3], number[3:5], number[5:]):
            spans.append(PiiSpan("id_number", m.start(1), m.end(1)))
    for m in CARD.finditer(text):
        digits = _digits(m.group(0))
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1 and not CN_MOBILE.fullmatch(m.group(0)):
            spans.append(PiiSpan("card", m.start(), m.end()))
    for pattern in (CN_MOBILE, CN_LANDLINE, NANP, INTERNATIONAL):
        for m in pattern.finditer(text):
            if 7 <= len(_digits(m.group(0))) <= 15:
                spans.append(PiiSpan("phone", m.start(), m.end()))
    for m in CONTEXT_ID.finditer(text):
        spans.append(PiiSpan("id_number", m.start(1), m.end(1)))
    for m in CONTEXT_PHONE.finditer(text):
        spans.append(PiiSpan("phone", m.start(1), m.end(1)))
    for pattern in (ZH_COMPOUND, PO_BOX):
        for m in pattern.finditer(text):
            spans.append(PiiSpan("address", m.start() + _lead_in(m.group(0)), m.end()))
    for m in EN_ADDRESS.finditer(text):
        if _EN_ADDRESS_NAME.match(m.group(0)):
            spans.append(PiiSpan("address", m.start(), m.end()))
    for m in ZH_ADDRESS.finditer(text):
        spans.append(PiiSpan("address", m.start() + _lead_in(m.group(0)), m.end()))
    return _without_overlaps(spans)


# When spans overlap, the more specific kind wins (an 18-digit ID is not also a phone number).
_PRIORITY = {"email": 0, "id_number": 1, "card": 2, "address": 3, "phone": 4}


_ZH_LEAD_IN = re.compile(r"^.*?(?:住在|家在|住址是|地址是|地址|位于|寄到|送到|搬到|在)")


def _lead_in(match: str) -> int:
    """Characters of a Chinese address match that are the sentence leading to it ("我家住在")."""
    found = _ZH_LEAD_IN.match(match)
    return found.end() if found and found.end() < len(match) - 4 else 0


def _without_overlaps(spans: list[PiiSpan]) -> list[PiiSpan]:
    kept: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (_PRIORITY[s.kind], -(s.end - s.start), s.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def redact(text: str, spans: list[PiiSpan] | None = None) -> tuple[str, list[str]]:
    """The text with each span replaced by `[kind]`, and the kinds found (in order, no repeats)."""
    spans = find_pii(text) if spans is None else spans
    out, last = [], 0
    for span in spans:
        out.append(text[last:span.start])
        out.append(f"[{span.kind}]")
        last = span.end
    out.append(text[last:])
    return "".join(out), list(dict.fromkeys(span.kind for span in spans))
