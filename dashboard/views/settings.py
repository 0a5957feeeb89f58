"""Org settings: cache and prompt storage, export sinks and their health, budget-alert webhooks and
their deliveries, tokens, members."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from analytics.selectors import sink_get, sink_list
from analytics.services import sink_create, sink_delete
from dashboard.forms import (
    AlertSettingsForm,
    InviteForm,
    MemberRoleForm,
    OrgSettingsForm,
    SinkForm,
    TokenForm,
    WebhookForm,
)
from dashboard.orgs import org_page, render_confirm, render_page
from dashboard.selectors import org_token_get
from keys.access import MANAGE, OWN
from keys.audit import Actor
from keys.models import Membership
from keys.selectors import member_list, membership_get_in_org, org_token_list
from keys.services import (
    invitation_create,
    membership_change_role,
    membership_remove,
    org_token_create,
    org_token_revoke,
    organization_settings_update,
)
from webhooks.selectors import alerts_of, delivery_list, webhook_get, webhook_list
from webhooks.services import WebhookInvalid, alerts_settings_update, webhook_create, webhook_delete

RECENT_DELIVERIES = 30


def _settings_page(request: HttpRequest, membership: Membership, status: int = 200, **forms) -> HttpResponse:
    org = membership.org
    context = {
        "settings_form": OrgSettingsForm(initial={"cache_enabled": org.cache_enabled,
                                                  "store_prompts": org.store_prompts,
                                                  "default_max_tokens": org.default_max_tokens}),
        "sink_form": SinkForm(),
        "webhook_form": WebhookForm(),
        "alerts_form": AlertSettingsForm(initial={"credits_low_below": alerts_of(org=org).credits_low_below}),
        "webhooks": webhook_list(org=org),
        "deliveries": delivery_list(org=org, limit=RECENT_DELIVERIES),
        "token_form": TokenForm(),
        "invite_form": InviteForm(),
        "sinks": sink_list(org=org),
        "tokens": org_token_list(org=org),
        "members": member_list(org=org),
        "roles": Membership.Role.values,
    }
    context.update(forms)
    return render_page(request, membership, "dashboard/settings.html", context, status=status)


@org_page()
def settings_page(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _settings_page(request, membership)


@require_POST
@org_page(MANAGE)
def org_settings(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = OrgSettingsForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, membership, settings_form=form, status=400)
    organization_settings_update(org=membership.org, actor=Actor.of_user(request.user), **form.cleaned_data)
    messages.success(request, "Saved the organization's settings.")
    return redirect("dashboard:settings")


@require_POST
@org_page(MANAGE)
def sink_new(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SinkForm(request.POST)
    if form.is_valid():
        try:
            sink_create(org=membership.org, type=form.cleaned_data["type"], config=form.config(),
                        actor=Actor.of_user(request.user))
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Added a {form.cleaned_data['type']} sink.")
            return redirect("dashboard:settings")
    return _settings_page(request, membership, sink_form=form, status=400)


@org_page(MANAGE)
def sink_remove(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    sink = sink_get(org=membership.org, pk=pk)
    if request.method == "POST":
        sink_delete(sink=sink, actor=Actor.of_user(request.user))
        messages.success(request, f"Removed the {sink.type} sink.")
        return redirect("dashboard:settings")
    return render_confirm(
        request,
        membership,
        title=f"Remove the {sink.type} sink?",
        text="Calls not yet exported to it will not be sent.",
        button="Remove sink",
        cancel=reverse("dashboard:settings"),
    )


@require_POST
@org_page(MANAGE)
def alert_settings(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = AlertSettingsForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, membership, alerts_form=form, status=400)
    alerts_settings_update(org=membership.org, actor=Actor.of_user(request.user), **form.cleaned_data)
    messages.success(request, "Saved the alert settings.")
    return redirect("dashboard:settings")


@never_cache
@require_POST
@org_page(MANAGE)
def webhook_new(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = WebhookForm(request.POST)
    if form.is_valid():
        try:
            data = form.cleaned_data
            webhook = webhook_create(org=membership.org, actor=Actor.of_user(request.user), url=data["url"],
                                     events=data["events"], secret=data["secret"] or None)
        except WebhookInvalid as exc:
            form.add_error(exc.field, str(exc))
        else:
            return render_page(request, membership, "dashboard/shown_once.html", {
                "title": f"Webhook {webhook.url}",
                "secret": webhook.secret,
                "text": "Its signing secret: each POST carries X-Nemo-Signature: sha256=<HMAC-SHA256 of the body "
                        "with this secret>. It is shown only now.",
                "back": "dashboard:settings",
            })
    return _settings_page(request, membership, webhook_form=form, status=400)


@org_page(MANAGE)
def webhook_remove(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    webhook = webhook_get(org=membership.org, pk=pk)
    if request.method == "POST":
        webhook_delete(webhook=webhook, actor=Actor.of_user(request.user))
        messages.success(request, f"Removed the webhook {webhook.url}.")
        return redirect("dashboard:settings")
    return render_confirm(
        request,
        membership,
        title=f"Remove the webhook {webhook.url}?",
        text="Events not yet delivered to it will not be sent.",
        button="Remove webhook",
        cancel=reverse("dashboard:settings"),
    )


@never_cache
@require_POST
@org_page(MANAGE)
def token_new(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, membership, token_form=form, status=400)
    token, secret = org_token_create(org=membership.org, name=form.cleaned_data["name"],
                                     actor=Actor.of_user(request.user))
    return render_page(request, membership, "dashboard/shown_once.html", {
        "title": f"Token {token.name}",
        "secret": secret,
        "text": "Scripts send it as Authorization: Bearer … to the management API. It is shown only now.",
        "back": "dashboard:settings",
    })


@require_POST
@org_page(MANAGE)
def token_revoke(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    token = org_token_get(org=membership.org, pk=pk)
    if token.revoked is None:
        org_token_revoke(token=token, actor=Actor.of_user(request.user))
    messages.success(request, f"Revoked token {token.name}.")
    return redirect("dashboard:settings")


@never_cache
@require_POST
@org_page(OWN)
def member_invite(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, membership, invite_form=form, status=400)
    invitation, token = invitation_create(org=membership.org, email=form.cleaned_data["email"],
                                          role=form.cleaned_data["role"], actor=Actor.of_user(request.user))
    link = request.build_absolute_uri(reverse("dashboard:invite", args=[token]))
    return render_page(request, membership, "dashboard/shown_once.html", {
        "title": f"Invitation for {invitation.email}",
        "secret": link,
        "text": f"Send this link to {invitation.email}; it makes them {invitation.role} of "
                f"{membership.org.name}, works once, and is shown only now.",
        "back": "dashboard:settings",
    })


@require_POST
@org_page(OWN)
def member_role(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    member = membership_get_in_org(org=membership.org, pk=pk)
    form = MemberRoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Choose a role: {', '.join(Membership.Role.values)}.")
        return _settings_page(request, membership, status=400)
    try:
        membership_change_role(membership=member, role=form.cleaned_data["role"], actor=Actor.of_user(request.user))
    except ValueError as exc:
        messages.error(request, str(exc))
        return _settings_page(request, membership, status=400)
    messages.success(request, f"{member.user.get_username()} is now {member.role}.")
    return redirect("dashboard:settings")


@org_page(OWN)
def member_remove(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    member = membership_get_in_org(org=membership.org, pk=pk)
    username = member.user.get_username()
    if request.method == "POST":
        try:
            membership_remove(membership=member, actor=Actor.of_user(request.user))
        except ValueError as exc:
            messages.error(request, str(exc))
            return _settings_page(request, membership, status=400)
        messages.success(request, f"Removed {username} from {membership.org.name}.")
        return redirect("dashboard:settings")
    return render_confirm(
        request,
        membership,
        title=f"Remove {username}?",
        text=f"They lose access to {membership.org.name}'s dashboard. Keys they created keep working.",
        button="Remove member",
        cancel=reverse("dashboard:settings"),
    )
