"""Matchers return None to allow and raise AuthorizationError to deny."""

from __future__ import annotations

import pytest

from sdk import (
    AuthorizationError,
    SpiffeId,
    TrustDomain,
    match_any,
    match_id,
    match_member_of,
    match_one_of,
)

WEB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/web")
DB = SpiffeId.parse("spiffe://example.org/ns/prod/sa/db")
FOREIGN = SpiffeId.parse("spiffe://other.org/ns/prod/sa/web")


def test_match_any_allows_every_id():
    assert match_any()(FOREIGN) is None


def test_match_id():
    assert match_id(WEB)(WEB) is None
    with pytest.raises(AuthorizationError, match="unexpected ID 'spiffe://example.org/ns/prod/sa/db'"):
        match_id(WEB)(DB)
    with pytest.raises(PermissionError):
        match_id(WEB)(FOREIGN)


def test_match_one_of():
    allow = match_one_of(WEB, DB)
    assert allow(DB) is None
    with pytest.raises(AuthorizationError, match="expected one of"):
        allow(FOREIGN)
    with pytest.raises(AuthorizationError, match="expected one of none"):
        match_one_of()(WEB)


def test_match_member_of():
    allow = match_member_of(TrustDomain.parse("example.org"))
    assert allow(WEB) is None
    with pytest.raises(AuthorizationError, match="unexpected trust domain 'other.org'"):
        allow(FOREIGN)


def test_strings_instead_of_values_are_refused_up_front():
    with pytest.raises(TypeError):
        match_id(str(WEB))
    with pytest.raises(TypeError):
        match_member_of("example.org")
    with pytest.raises(TypeError):
        match_id(WEB)(str(WEB))
