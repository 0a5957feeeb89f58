"""Which org an API call acts on, with which role, and who to name in the audit trail.

An org token acts for its own org with the admin role. A signed-in user acts for the org named
by the ``X-Nemo-Org`` header (a slug) if given, else for the dashboard's current org (session key
``org_id``); without a membership there, the call is refused with 403 before any object is looked
up. A token ignores ``X-Nemo-Org``: it belongs to one org. Reading needs the READ role; every
other method needs MANAGE.
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.views import APIView

from dashboard.api.auth import OrgTokenUser
from dashboard.api.parsers import JSONParser
from keys.access import MANAGE, READ, current_membership, require
from keys.audit import Actor
from keys.models import Membership, Organization
from keys.selectors import membership_get, organization_by_slug

ORG_HEADER = "X-Nemo-Org"
SESSION_ORG_KEY = "org_id"


@dataclass(frozen=True)
class OrgAccess:
    org: Organization
    role: str
    actor: Actor


def actor_for(user: AbstractBaseUser | OrgTokenUser) -> Actor:
    """The audit actor of an API caller: the user, or ``token:<prefix>`` for an org token."""
    if isinstance(user, OrgTokenUser):
        return Actor.system(f"token:{user.token.prefix}")
    return Actor.of_user(user)


def _session_membership(request: Request) -> Membership | None:
    slug = request.headers.get(ORG_HEADER)
    if slug:
        org = organization_by_slug(slug)
        return membership_get(user=request.user, org=org) if org is not None else None
    return current_membership(request.user, request.session.get(SESSION_ORG_KEY))


def org_access(request: Request, *, need: str) -> OrgAccess:
    """The caller's org and role, if the role allows ``need``; PermissionDenied otherwise."""
    user = request.user
    if isinstance(user, OrgTokenUser):
        org, role = user.org, Membership.Role.ADMIN
    else:
        membership = _session_membership(request)
        if membership is None:
            # Same answer for an unknown slug and someone else's org: nothing to learn by probing.
            raise PermissionDenied("You are not a member of this organization.")
        org, role = membership.org, membership.role
    require(role, need)
    return OrgAccess(org=org, role=role, actor=actor_for(user))


class OrgAPIView(APIView):
    # The base of every management endpoint: self.access is set before the handler runs. (A
    # comment, not a docstring: the schema would show a docstring as each endpoint's description.)

    access: OrgAccess
    # DRF's defaults, with a JSON parser that refuses a body nested too deeply as bad input.
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self.access = org_access(request, need=READ if request.method in SAFE_METHODS else MANAGE)

    def perform_content_negotiation(self, request: Request, force: bool = False):
        try:
            return super().perform_content_negotiation(request, force)
        except Http404 as exc:
            # DRF answers an unknown ?format= with a 404, as if the page did not exist; it is bad input.
            raise ValidationError({"format": "This endpoint has no such format."}) from exc
