"""Who may do what in an org. Every page and API call goes through here.

Roles: a member reads everything of the org; an admin also issues and changes keys, teams,
budgets, sinks and settings; an owner also manages members.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied

from keys.models import Membership

READ = "read"
MANAGE = "manage"
OWN = "own"

_ALLOWED = {
    READ: {Membership.Role.MEMBER, Membership.Role.ADMIN, Membership.Role.OWNER},
    MANAGE: {Membership.Role.ADMIN, Membership.Role.OWNER},
    OWN: {Membership.Role.OWNER},
}


def role_allows(role: str, need: str) -> bool:
    return role in _ALLOWED[need]


def require(role: str, need: str) -> None:
    if not role_allows(role, need):
        raise PermissionDenied(f"Your role ({role}) may not do this.")


def current_membership(user: AbstractBaseUser, org_id: int | None = None) -> Membership | None:
    """The user's membership in ``org_id`` if given and theirs, else in their first org."""
    memberships = Membership.objects.filter(user=user).select_related("org").order_by("created", "id")
    if org_id is not None:
        chosen = memberships.filter(org_id=org_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()
