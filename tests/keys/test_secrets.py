"""Virtual keys and org tokens: shown once, stored as a prefix plus a keyed hash, found by secret."""

import hashlib
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import Budget
from billing.services import budget_set
from keys.models import AuditEvent, OrgToken, VirtualKey
from keys.secrets import KEY_SCHEME, TOKEN_SCHEME, generate, is_well_formed
from keys.selectors import key_authenticate, org_token_authenticate
from keys.services import (
    org_token_create,
    org_token_revoke,
    virtual_key_create,
    virtual_key_revoke,
    virtual_key_rotate,
)

pytestmark = pytest.mark.django_db

SECRET_SHAPE = re.compile(r"sk-nemo-[A-Za-z0-9_-]{43}")
# The scheme and the 12-character lookup prefix: the part of a secret stored in clear.
PREFIX_END = len("sk-nemo-") + 12


@pytest.fixture
def key_and_secret(org, system_actor):
    return virtual_key_create(org=org, name="agent", actor=system_actor)


def stored_row(model, pk) -> str:
    """Every column of a row, as the database holds it."""
    return json.dumps(model.objects.filter(pk=pk).values().get(), default=str)


def test_a_secret_is_the_scheme_and_43_random_url_safe_characters(key_and_secret):
    _, secret = key_and_secret
    assert SECRET_SHAPE.fullmatch(secret)


def test_two_keys_get_different_secrets(org, system_actor):
    _, first = virtual_key_create(org=org, name="one", actor=system_actor)
    _, second = virtual_key_create(org=org, name="two", actor=system_actor)
    assert first[len("sk-nemo-"):] != second[len("sk-nemo-"):]


def test_the_key_stores_only_the_public_prefix_of_its_secret(key_and_secret):
    key, secret = key_and_secret
    assert key.prefix == secret[len("sk-nemo-"):PREFIX_END]
    assert secret[PREFIX_END:] not in stored_row(VirtualKey, key.pk)


def test_the_secret_appears_in_no_column_of_the_key(key_and_secret):
    key, secret = key_and_secret
    assert secret not in stored_row(VirtualKey, key.pk)


def test_the_secret_appears_in_no_audit_row(key_and_secret):
    _, secret = key_and_secret
    rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert secret[PREFIX_END:] not in rows


def test_the_stored_hash_is_not_a_plain_hash_of_the_secret(key_and_secret):
    key, secret = key_and_secret
    assert key.secret_hash != hashlib.sha256(secret.encode()).hexdigest()


def test_a_key_is_found_by_its_secret(key_and_secret):
    key, secret = key_and_secret
    assert key_authenticate(secret) == key


def test_the_hash_is_keyed_by_the_server_secret(key_and_secret):
    _, secret = key_and_secret
    with override_settings(SECRET_KEY="another-server-secret"):
        assert key_authenticate(secret) is None


def test_a_wrong_secret_with_a_right_prefix_is_refused(key_and_secret):
    _, secret = key_and_secret
    other_secret, _ = generate(KEY_SCHEME)
    forged = secret[:PREFIX_END] + other_secret[PREFIX_END:]
    assert key_authenticate(forged) is None


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: s[:-1], id="one-character-short"),
        pytest.param(lambda s: s + "x", id="one-character-long"),
        pytest.param(lambda s: s[:PREFIX_END] + s[PREFIX_END:].swapcase(), id="other-case"),
        pytest.param(lambda s: s[:PREFIX_END], id="prefix-alone"),
        pytest.param(lambda s: s[:-1] + "é", id="non-ascii"),
        pytest.param(lambda s: "nm-" + s[len("sk-nemo-"):], id="token-scheme"),
        pytest.param(lambda s: s[len("sk-nemo-"):], id="no-scheme"),
    ],
)
def test_a_near_miss_of_the_secret_is_refused(key_and_secret, tamper):
    _, secret = key_and_secret
    assert key_authenticate(tamper(secret)) is None


def test_an_empty_secret_is_refused(key_and_secret):
    assert key_authenticate("") is None


def test_a_revoked_key_is_no_longer_active(key_and_secret, system_actor):
    key, secret = key_and_secret
    virtual_key_revoke(key=key, actor=system_actor)
    assert key_authenticate(secret).is_active() is False


def test_an_expired_key_is_no_longer_active(org, system_actor):
    _, secret = virtual_key_create(
        org=org, name="agent", actor=system_actor, expires=timezone.now() - timedelta(seconds=1)
    )
    assert key_authenticate(secret).is_active() is False


def test_a_key_expiring_later_is_active(org, system_actor):
    _, secret = virtual_key_create(
        org=org, name="agent", actor=system_actor, expires=timezone.now() + timedelta(hours=1)
    )
    assert key_authenticate(secret).is_active() is True


def test_a_key_stops_being_active_at_its_expiry_instant(org, system_actor):
    expires = timezone.now() + timedelta(hours=1)
    key, _ = virtual_key_create(org=org, name="agent", actor=system_actor, expires=expires)
    assert key.is_active(now=expires) is False


def test_rotation_gives_a_new_secret_that_works(key_and_secret, system_actor):
    key, old_secret = key_and_secret
    _, new_secret = virtual_key_rotate(key=key, actor=system_actor)
    assert new_secret != old_secret
    assert key_authenticate(new_secret) == key


def test_after_rotation_the_old_secret_stops_working(key_and_secret, system_actor):
    key, old_secret = key_and_secret
    virtual_key_rotate(key=key, actor=system_actor)
    assert key_authenticate(old_secret) is None


def test_rotation_keeps_the_key_and_its_budget(key_and_secret, org, system_actor):
    key, _ = key_and_secret
    budget = budget_set(org=org, key=key, amount=Decimal("3.00"), period=Budget.Period.DAILY, actor=system_actor)
    _, new_secret = virtual_key_rotate(key=key, actor=system_actor)
    rotated = key_authenticate(new_secret)
    assert rotated.pk == key.pk
    assert list(rotated.budgets.values_list("pk", "amount")) == [(budget.pk, Decimal("3.000000"))]


def test_the_rotated_secret_is_not_stored_either(key_and_secret, system_actor):
    key, _ = key_and_secret
    _, new_secret = virtual_key_rotate(key=key, actor=system_actor)
    assert new_secret not in stored_row(VirtualKey, key.pk)


def test_an_org_token_is_found_by_its_secret(org, system_actor):
    token, secret = org_token_create(org=org, name="ci", actor=system_actor)
    assert secret.startswith("nm-")
    assert org_token_authenticate(secret) == token


def test_an_org_token_secret_appears_in_no_column(org, system_actor):
    token, secret = org_token_create(org=org, name="ci", actor=system_actor)
    assert secret not in stored_row(OrgToken, token.pk)


def test_a_revoked_org_token_is_refused(org, system_actor):
    token, secret = org_token_create(org=org, name="ci", actor=system_actor)
    org_token_revoke(token=token, actor=system_actor)
    assert org_token_authenticate(secret) is None


def test_a_key_secret_is_not_an_org_token(key_and_secret):
    _, secret = key_and_secret
    assert org_token_authenticate(secret) is None


@pytest.mark.parametrize("scheme", [KEY_SCHEME, TOKEN_SCHEME])
def test_every_generated_secret_has_the_shape_the_gateway_accepts(scheme):
    assert all(is_well_formed(generate(scheme)[0], scheme) for _ in range(200))
