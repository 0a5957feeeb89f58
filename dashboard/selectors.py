"""Reads the dashboard needs that no app offers yet, scoped by org like every tenant read."""

from django.http import Http404

from keys.models import Organization, OrgToken
from keys.selectors import org_token_list


def org_token_get(*, org: Organization, pk: int) -> OrgToken:
    token = org_token_list(org=org).filter(pk=pk).first()
    if token is None:
        raise Http404("No such token.")
    return token
