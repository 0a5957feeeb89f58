"""Reads of tenants and keys. Tenant data is only read through these, scoped by org; a missing
object and another org's object raise the same Http404."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from keys import secrets
from keys.models import Membership, Organization, OrgToken, Team, VirtualKey


def _get_in_org(queryset: QuerySet, *, org: Organization, pk) -> object:
    try:
        return queryset.get(org=org, pk=int(pk))
    except (ValueError, TypeError, queryset.model.DoesNotExist) as exc:
        raise Http404(f"No such {queryset.model._meta.verbose_name}.") from exc


def key_authenticate(secret: str) -> VirtualKey | None:
    """The key a secret belongs to, or None. Revocation and expiry are the caller's to check."""
    if not secret.startswith(secrets.KEY_SCHEME):
        return None
    prefix = secrets.prefix_of(secret, secrets.KEY_SCHEME)
    key = VirtualKey.objects.select_related("org", "team").filter(prefix=prefix).first()
    if key is None or not secrets.matches(secret, key.secret_hash):
        return None
    return key


def org_token_authenticate(secret: str) -> OrgToken | None:
    if not secret.startswith(secrets.TOKEN_SCHEME):
        return None
    prefix = secrets.prefix_of(secret, secrets.TOKEN_SCHEME)
    token = OrgToken.objects.select_related("org").filter(prefix=prefix, revoked__isnull=True).first()
    if token is None or not secrets.matches(secret, token.secret_hash):
        return None
    return token


def key_list(*, org: Organization) -> QuerySet[VirtualKey]:
    return VirtualKey.objects.filter(org=org).select_related("team").order_by("-created", "-id")


def key_get(*, org: Organization, pk) -> VirtualKey:
    return _get_in_org(VirtualKey.objects.select_related("org", "team"), org=org, pk=pk)


def key_find_by_prefix(*, org: Organization, prefix: str) -> VirtualKey | None:
    return VirtualKey.objects.filter(org=org, prefix=prefix).first()


def team_list(*, org: Organization) -> QuerySet[Team]:
    return Team.objects.filter(org=org).order_by("name")


def team_get(*, org: Organization, pk) -> Team:
    return _get_in_org(Team.objects.select_related("org"), org=org, pk=pk)


def membership_get(*, user: AbstractBaseUser, org: Organization) -> Membership | None:
    return Membership.objects.filter(user=user, org=org).first()


def membership_get_in_org(*, org: Organization, pk) -> Membership:
    return _get_in_org(Membership.objects.select_related("org", "user"), org=org, pk=pk)


def memberships_of(*, user: AbstractBaseUser) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("org").order_by("created")


def member_list(*, org: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(org=org).select_related("user").order_by("created")


def org_token_list(*, org: Organization) -> QuerySet[OrgToken]:
    return OrgToken.objects.filter(org=org).order_by("-created")


def organization_by_slug(slug: str) -> Organization | None:
    return Organization.objects.filter(slug=slug).first()
