"""Numbers as people write them: digits with commas, currency and units, English number words
("eighteen", "two hundred and five"), Chinese numerals (十八, 二百零五). Pure functions, no I/O.

Used by the answer-leak guard (does a reply state the final answer?) and by the turn evaluator
(did the student state it?)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_DIGITS = re.compile(
    r"(?<![\w.])"  # not the tail of a word or of a longer number
    r"(?P<neg>[-−])?"
    r"(?:[$€£¥]\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+)(?![\d.]))?"
)
# digits glued to a letter (e.g. "x2", "3x") are still numbers: a second, looser pass
_DIGITS_LOOSE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")

_UNITS = {
    "zero": 0, "oh": None, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_UNITS = {k: v for k, v in _UNITS.items() if v is not None}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_WORD_EXTRAS = {"dozen": 12, "half": Decimal("0.5")}  # only as a standalone quantity, see words_numbers
_WORD = re.compile(r"[a-z]+")

_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_ZH_SCALES = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_ZH_RUN = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")


def to_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "").replace("−", "-"))
    except (InvalidOperation, ValueError):
        return None


Span = tuple[int, int, Decimal]  # start, end, value


def digit_spans(text: str) -> list[Span]:
    """Every number written with digits: "1,250", "$18.00", "-3", "3/4" (as 0.75 and also 3 and 4),
    digits glued to letters ("x=18kg", "3x")."""
    found: list[Span] = []
    for match in _DIGITS.finditer(text):
        value = to_decimal(match.group("num"))
        if value is None:
            continue
        if match.group("neg"):
            value = -value
        start, end = match.span()
        if match.group("den"):
            den = to_decimal(match.group("den"))
            found.append((start, start + len(match.group("num")), value))
            found.append((end - len(match.group("den")), end, den))
            if den:
                found.append((start, end, value / den))
        else:
            found.append((start, end, value))
    covered = [(s, e) for s, e, _ in found]
    for match in _DIGITS_LOOSE.finditer(text):
        if not any(s <= match.start() < e for s, e in covered):
            value = to_decimal(match.group())
            if value is not None:
                found.append((match.start(), match.end(), value))
    return found


def word_spans(text: str) -> list[Span]:
    """English number words: "eighteen", "twenty-five", "two hundred and five", "a dozen"."""
    lowered = text.lower()
    tokens = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(lowered)]
    found: list[Span] = []
    i = 0
    while i < len(tokens):
        word = tokens[i][2]
        if word in _UNITS or word in _TENS or (word in _SCALES and i > 0 and tokens[i - 1][2] == "a"):
            total, current, j, last = 0, 0, i, i
            while j < len(tokens):
                w = tokens[j][2]
                if w in _UNITS:
                    current += _UNITS[w]
                elif w in _TENS:
                    current += _TENS[w]
                elif w in _SCALES:
                    current = max(current, 1) * _SCALES[w]
                    if _SCALES[w] >= 1000:
                        total, current = total + current, 0
                elif w == "and" and j > i and tokens[j - 1][2] in _SCALES and j + 1 < len(tokens) \
                        and (tokens[j + 1][2] in _UNITS or tokens[j + 1][2] in _TENS):
                    j += 1
                    continue
                else:
                    break
                last = j
                j += 1
            found.append((tokens[i][0], tokens[last][1], Decimal(total + current)))
            i = last + 1
            continue
        if word == "dozen" and (i == 0 or tokens[i - 1][2] in ("a", "one")):
            found.append((tokens[i][0], tokens[i][1], Decimal(12)))
        i += 1
    return found


def _chinese_value(run: str) -> Decimal:
    if all(ch in _ZH_DIGITS for ch in run):  # 一二三 read digit by digit
        return Decimal(int("".join(str(_ZH_DIGITS[ch]) for ch in run)))
    total, section, digit = 0, 0, 0
    for ch in run:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        else:
            scale = _ZH_SCALES[ch]
            if scale >= 10_000:
                section = (section + digit) * scale
                total, section = total + section, 0
            else:
                section += (digit or 1) * scale
            digit = 0
    return Decimal(total + section + digit)


def chinese_spans(text: str) -> list[Span]:
    """Chinese numerals: 十八 -> 18, 二十五 -> 25, 一百零五 -> 105, 三万 -> 30000, 一二三 -> 123."""
    return [(m.start(), m.end(), _chinese_value(m.group())) for m in _ZH_RUN.finditer(text)]


def number_spans(text: str) -> list[Span]:
    return digit_spans(text) + word_spans(text) + chinese_spans(text)


def numbers_in(text: str) -> list[Decimal]:
    """Every number a reader would see in `text`, in any of the forms above."""
    return [value for _, _, value in number_spans(text)]


def last_number(text: str) -> Decimal | None:
    """The number a text ends on ("... so 12 + 3 = 15 spoons" -> 15; "is it twenty five?" -> 25)."""
    spans = number_spans(text)
    if not spans:
        return None
    return max(spans, key=lambda s: (s[1], s[1] - s[0]))[2]


def same_number(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) <= Decimal("0.0001") * max(Decimal(1), abs(b))


def parse_answer(text: str) -> Decimal | None:
    """The final numeric answer of a worked solution (GSM8K / MathDial: the last line, or after '####')."""
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    lines = [line.strip() for line in text.replace("\\n", "\n").splitlines() if line.strip()]
    if not lines:
        return None
    values = digit_spans(lines[-1])
    return values[-1][2] if values else None
