"""Validation errors in words a person can act on: no pydantic prefixes or internal class names."""

from __future__ import annotations

from teamrouter.api.errors import describe_validation


def test_a_validators_own_words_lose_pydantics_prefix():
    errors = [{"type": "value_error", "loc": ("body", "limit"), "msg": "Value error, must be a number (USD)"}]
    assert describe_validation(errors) == ("limit: must be a number (USD)", "limit")


def test_union_member_types_are_not_named_and_repeats_are_said_once():
    errors = [
        {
            "type": "literal_error",
            "loc": ("body", "filters", "FilterObject", "operator"),
            "msg": "Input should be 'eq'",
        },
        {
            "type": "literal_error",
            "loc": ("body", "filters", "list[FilterItem]", 0, "operator"),
            "msg": "Input should be 'eq'",
        },
        {
            "type": "literal_error",
            "loc": ("body", "filters", "FilterObject", "operator"),
            "msg": "Input should be 'eq'",
        },
    ]
    message, field = describe_validation(errors)
    assert message == "filters.operator: Input should be 'eq'; filters.0.operator: Input should be 'eq'"
    assert field == "filters.operator"


def test_missing_and_unknown_fields_keep_their_words():
    errors = [
        {"type": "missing", "loc": ("body", "name"), "msg": "Field required"},
        {"type": "extra_forbidden", "loc": ("body", "organization_id"), "msg": "Extra inputs are not permitted"},
    ]
    assert describe_validation(errors) == ("name: field required; organization_id: unknown field", "name")


def test_a_field_the_client_sent_is_named_even_if_it_looks_like_a_type():
    unknown = [{"type": "extra_forbidden", "loc": ("body", "Name"), "msg": "Extra inputs are not permitted"}]
    assert describe_validation(unknown) == ("Name: unknown field", "Name")
    # A builtin union member ("str" of `str | list[str]`) is a type, not a field.
    union = [
        {"type": "string_type", "loc": ("body", "stop", "str"), "msg": "Input should be a valid string"},
        {"type": "list_type", "loc": ("body", "stop", "list[str]"), "msg": "Input should be a valid list"},
    ]
    assert describe_validation(union) == (
        "stop: Input should be a valid string; stop: Input should be a valid list",
        "stop",
    )
