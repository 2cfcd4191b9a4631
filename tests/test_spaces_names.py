"""Space names, space keys (§9.1) and topic/service names (§9.3, §9.6, §9.7)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from relay.spaces.names import (
    check_space_key,
    is_valid_space_name,
    is_validator_name,
    name_problem,
    service_name_problem,
    space_from_query,
    space_key,
)


@pytest.mark.parametrize("name", ["a", "default", "A-z_0.9", "_x", "-", "x" * 64, "9.9"])
def test_valid_space_names(name: str) -> None:
    assert is_valid_space_name(name)
    assert space_from_query(name) == name


@pytest.mark.parametrize("name", [".a", "x" * 65, "a b", "é", "a/b", "a\n", "a\x00", "a:b"])
def test_invalid_space_names(name: str) -> None:
    assert not is_valid_space_name(name)
    assert space_from_query(name) is None


def test_absent_or_empty_space_is_default() -> None:
    assert space_from_query(None) == "default"
    assert space_from_query("") == "default"


def test_space_key_is_unpadded_base64url_hmac_sha256() -> None:
    key = space_key("s3cret", "demo")
    digest = hmac.new(b"s3cret", b"demo", hashlib.sha256).digest()
    assert key == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(key) == 43 and "=" not in key
    assert space_key("sécret", "demo") == base64.urlsafe_b64encode(
        hmac.new("sécret".encode(), b"demo", hashlib.sha256).digest()).decode().rstrip("=")


def test_check_space_key() -> None:
    key = space_key("k", "demo")
    assert check_space_key("k", "demo", key)
    assert not check_space_key("k", "demo", None)
    assert not check_space_key("k", "demo", "")
    assert not check_space_key("k", "other", key)
    assert not check_space_key("k", "demo", key[:-1] + ("A" if key[-1] != "A" else "B"))
    assert not check_space_key("k", "demo", "ключ")  # non-ASCII must not raise
    assert check_space_key("", "demo", None)  # no secret: every space open
    assert check_space_key("", "demo", "anything")


@pytest.mark.parametrize(("value", "code"), [
    ("t", None), ("x" * 256, None), ("a b/ç", None), ("_chatroom/x", None),
    ("x" * 257, "too_large"), ("\n" * 300, "too_large"),
    ("", "invalid_payload"), ("a\nb", "invalid_payload"), ("a\x00", "invalid_payload"),
    (None, "invalid_payload"), (5, "invalid_payload"), (["t"], "invalid_payload"),
])
def test_name_problem(value: object, code: str | None) -> None:
    assert name_problem(value) == code


def test_validator_names_limit_the_topic_part() -> None:
    prefix = "_chatroom/validate_change/"
    assert service_name_problem(prefix + "x" * 256) is None
    assert service_name_problem(prefix + "x" * 257) == "too_large"
    assert service_name_problem(prefix) == "invalid_payload"
    assert is_validator_name(prefix + "score")
    assert not is_validator_name(prefix + "_chatroom/server_status")
    assert not is_validator_name("_chatroom/other")
