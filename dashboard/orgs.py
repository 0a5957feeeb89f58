"""The org a dashboard page works on, and the role check every page makes.

The current org is the one chosen with the org switcher (kept in the session) if the user still
belongs to it, else their first. Every view gets it from ``org_page`` and reads tenant data only
through the org-scoped selectors with that org.
"""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from keys.access import MANAGE, OWN, READ, current_membership, require, role_allows
from keys.models import Membership
from keys.selectors import memberships_of

SESSION_ORG = "org_id"


def org_page(need: str = READ) -> Callable:
    """Decorates a view ``view(request, membership, ...)``: signed in, a member, allowed ``need``."""

    def decorator(view: Callable) -> Callable:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            membership = current_membership(request.user, request.session.get(SESSION_ORG))
            if membership is None:
                return redirect("dashboard:no_org")
            require(membership.role, need)
            return view(request, membership, *args, **kwargs)

        return wrapper

    return decorator


def render_page(
    request: HttpRequest, membership: Membership, template: str, context: dict | None = None, status: int = 200
) -> HttpResponse:
    """Renders a page with what the layout needs: the org, the role, and the orgs to switch to."""
    page = {
        "membership": membership,
        "org": membership.org,
        "can_manage": role_allows(membership.role, MANAGE),
        "is_owner": role_allows(membership.role, OWN),
        "memberships": memberships_of(user=request.user),
    }
    page.update(context or {})
    return render(request, template, page, status=status)


def render_confirm(
    request: HttpRequest, membership: Membership, *, title: str, text: str, button: str, cancel: str,
    danger: bool = True,
) -> HttpResponse:
    """The page that asks before a POST changes something that cannot be taken back."""
    return render_page(request, membership, "dashboard/confirm.html", {
        "title": title, "text": text, "button": button, "cancel": cancel, "danger": danger,
    })


def choose_org(request: HttpRequest, org_id: int) -> Membership | None:
    """Makes ``org_id`` the current org if the user belongs to it."""
    membership = current_membership(request.user, org_id)
    if membership is None or membership.org_id != org_id:
        return None
    request.session[SESSION_ORG] = org_id
    return membership
