"""The rule for names a person gives (organizations, keys, display names): one line of visible text.

Names go into mail headers (an invitation's Subject), pages, logs and CSV exports, so a name may
not contain, anywhere in it:

- control characters (Unicode Cc: NUL, TAB, CR, LF, ESC, DEL, the C1 range with NEL): a line break
  in a header makes the mail unsendable, PostgreSQL text columns refuse NUL, and the others
  misalign or restyle a page, a log line or a CSV row;
- line and paragraph separators (U+2028, U+2029): line breaks under other names;
- format characters (Unicode Cf), which are invisible yet change how a name reads: the bidi
  embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069) reorder the text around them
  ("Acme\\u202egnp.exe" shows as "Acmeexe.png"); the direction marks, zero-width space, word joiner,
  soft hyphen, BOM and tag characters make names that look the same differ, or hide text in one.
  Except what writing needs: ZWNJ and ZWJ (U+200C, U+200D), which Persian and Indic scripts need
  to spell words and emoji sequences (👩‍💻) are joined with; the left-to-right, right-to-left and
  Arabic letter marks (U+200E, U+200F, U+061C), which text pasted from right-to-left documents
  carries and which, unlike the overrides, reorder nothing but the punctuation beside them; the
  signs some scripts write with (the Mongolian vowel separator, the Syriac abbreviation mark, the
  Arabic number signs and end of ayah, the Kaithi number signs); and the tag characters of the
  three subdivision flags (England, Scotland, Wales) and nowhere else, for tags spell hidden text;
- surrogates (Cs): a lone one is not a character, and neither UTF-8 nor PostgreSQL can store it.

Letters of other scripts that look like Latin ones (Cyrillic "а") are allowed: names are written in
every script, and telling a look-alike from a real name is not something a character rule can do.
Leading and trailing whitespace is dropped first, so a pasted "Acme\\n" is simply "Acme". A name
must show something: one made only of characters that print as nothing (the Hangul fillers, the
braille blank, combining marks with no letter under them) is as blank as an empty one.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import groupby

from teamrouter.errors import bad_field

# Format characters that writing needs (see above).
_WRITTEN = frozenset(
    "\u200c\u200d"  # ZWNJ, ZWJ
    "\u200e\u200f\u061c"  # LRM, RLM, ALM
    "\u180e\u070f\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u08e2\U000110bd\U000110cd"
)
_FLAG_TAGS = re.compile(
    "\U0001f3f4\U000e0067\U000e0062(?:\U000e0065\U000e006e\U000e0067|\U000e0073\U000e0063\U000e0074|\U000e0077\U000e006c\U000e0073)\U000e007f"
)
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")  # what str.splitlines splits at
# Letters and symbols by category that print as blank space.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # Hangul fillers, braille pattern blank


def _kind(char: str) -> str | None:
    """What is wrong with one character in a name, or None."""
    if char in _LINE_BREAKS:
        return "line breaks"
    if char in _BIDI_CONTROLS:
        return "text direction controls"
    category = unicodedata.category(char)
    if category == "Cc":
        return "control characters"
    if category == "Cf" and char not in _WRITTEN:
        return "formatting characters"
    if category == "Cs":
        return "unpaired surrogates"
    return None


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a name, in words for the person who typed it (naming the first character
    refused by its code point: it is usually invisible), or None."""
    for char in _FLAG_TAGS.sub("\U0001f3f4", name):
        kind = _kind(char)
        if kind is not None:
            return f"must not contain {kind} (found U+{ord(char):04X})"
    return None


def shows_something(name: str) -> bool:
    """Whether `name` has a character that prints as more than blank space."""
    return any(
        not char.isspace() and char not in _BLANKS and unicodedata.category(char) not in ("Mn", "Me", "Cf")
        for char in name
    )


def checked_name(name: str) -> str:
    """`name` without surrounding whitespace, "" when it shows nothing; a ValueError saying what it
    must not contain (for a pydantic validator: teamrouter.domain.orgs.settings)."""
    cleaned = name.strip()
    if not shows_something(cleaned):
        return ""
    problem = name_problem(cleaned)
    if problem is not None:
        raise ValueError(problem)
    return cleaned


def clean_name(field: str, name: str, *, required: bool = True) -> str:
    """`checked_name`, or a 400 naming `field` (blank too, when `required`: an optional name that
    shows nothing is no name)."""
    try:
        cleaned = checked_name(name)
    except ValueError as exc:
        raise bad_field(field, str(exc)) from None
    if required and not cleaned:
        raise bad_field(field, "must not be blank")
    return cleaned


def shown_name(name: str) -> str:
    """A stored name as one line of plain text, for rows stored before this rule: each run of the
    characters it refuses reads as one space ("Line\\nBreak" → "Line Break")."""
    flags = _FLAG_TAGS.findall(name)
    parts = []
    for i, part in enumerate(_FLAG_TAGS.split(name)):  # a flag's tags are kept whole
        runs = groupby(part, key=lambda char: _kind(char) is not None)
        parts.append("".join(" " if refused else "".join(chars) for refused, chars in runs))
        if i < len(flags):
            parts.append(flags[i])
    return "".join(parts).strip()
