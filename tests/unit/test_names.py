"""The rule for names a person gives (teamrouter.domain.names): what it refuses, what it lets through."""

from __future__ import annotations

import pytest

from teamrouter.domain.names import clean_name, name_problem, shown_name
from teamrouter.errors import BadRequest

REFUSED = [
    ("Line\nBreak", "line breaks", "000A"),
    ("Line\r\nBreak", "line breaks", "000D"),
    ("Para\u2029graph", "line breaks", "2029"),
    ("Nul\x00Byte", "control characters", "0000"),
    ("Tab\tbed", "control characters", "0009"),
    ("Esc\x1b[31m", "control characters", "001B"),
    ("Del\x7f", "control characters", "007F"),
    ("Acme\u202egnp.exe", "text direction controls", "202E"),
    ("Acme\u202a", "text direction controls", "202A"),
    ("Acme\u2066x\u2069", "text direction controls", "2066"),
    ("Zero\u200bwidth", "formatting characters", "200B"),
    ("Soft\xadhyphen", "formatting characters", "00AD"),
    ("\ufeffBom", "formatting characters", "FEFF"),
    ("Tag\U000e0041", "formatting characters", "E0041"),
    # Tags spell hidden text: a flag's tags pass only for the three subdivision flags.
    ("\U0001f3f4\U000e0068\U000e0069\U000e007f", "formatting characters", "E0068"),
    ("Join\u2060er", "formatting characters", "2060"),
    ("Lone\ud800", "unpaired surrogates", "D800"),
]


@pytest.mark.parametrize(("name", "kind", "code"), REFUSED)
def test_refused_characters_are_named_by_kind_and_code_point(name, kind, code):
    problem = name_problem(name)
    assert problem == f"must not contain {kind} (found U+{code})"
    with pytest.raises(BadRequest) as caught:
        clean_name("name", name)
    assert caught.value.metadata == {"field": "name"} and caught.value.message == f"name: {problem}"


@pytest.mark.parametrize(
    "name",
    [
        "Acme",
        "Café Ünïcode ✓",
        "東京チーム",
        "שלום עולם",  # right-to-left letters are letters; only the controls are refused
        "فارسی\u200cزبان",  # ZWNJ: Persian needs it to spell the word
        "\U0001f469\u200d\U0001f4bb devs",  # ZWJ: one emoji, woman technologist
        "\u0410cme",  # Cyrillic A: look-alikes are letters of other scripts (see the module)
        "\u05e9\u05dc\u05d5\u05dd\u200f (2024)",  # RLM, as text pasted from a right-to-left document has it
        "\u182c\u1820\u1837\u1820\u180e\u1820",  # Mongolian, with its vowel separator
        "\u0600\u0661\u0662",  # an Arabic number sign before its digits
        "\u0710\u070f\u0712",  # the Syriac abbreviation mark
        "Team \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland's flag
    ],
)
def test_names_in_any_script_pass(name):
    assert name_problem(name) is None
    assert clean_name("name", name) == name
    assert shown_name(name) == name


def test_surrounding_whitespace_is_dropped_and_blank_is_refused_only_when_required():
    assert clean_name("name", "  Acme\n") == "Acme"
    assert clean_name("name", " \t ", required=False) == ""
    with pytest.raises(BadRequest, match="name: must not be blank"):
        clean_name("name", " \n ")


@pytest.mark.parametrize("name", ["\u3164", "\u115f\u1160", "\uffa0", "\u2800\u2800", "\u034f", "\u0301\u0301"])
def test_a_name_that_prints_as_nothing_is_blank(name):
    # Hangul fillers, the braille blank, combining marks with nothing under them: letters and marks
    # by category, blank on the page.
    with pytest.raises(BadRequest, match="name: must not be blank"):
        clean_name("name", name)
    assert clean_name("name", name, required=False) == ""  # an optional name that shows nothing is none
    assert clean_name("name", "e\u0301\u0301") == "e\u0301\u0301"  # marks on a letter show it
    assert clean_name("name", "\u3164Acme") == "\u3164Acme"


def test_a_stored_name_is_shown_as_one_line_of_plain_text():
    assert shown_name("Line\nBreak") == "Line Break"
    assert shown_name("Line\r\n\r\nBreak\n") == "Line Break"
    assert shown_name("Acme\u202egnp.exe") == "Acme gnp.exe"
    assert shown_name("a\x00\tb") == "a b"
