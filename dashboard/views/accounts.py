"""Sign-up, log-in, invitations and the org switcher."""

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_POST

from dashboard.forms import EMAIL_TAKEN, AccountForm, LoginForm, SignupForm
from dashboard.orgs import SESSION_ORG, choose_org
from dashboard.services import account_join, account_signup
from keys.access import current_membership
from keys.models import Membership
from keys.services import invitation_accept

BACKEND = "django.contrib.auth.backends.ModelBackend"


def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard:overview" if request.user.is_authenticated else "dashboard:login")


class LoginView(auth_views.LoginView):
    authentication_form = LoginForm
    redirect_authenticated_user = True


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard:keys")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user, org = account_signup(email=form.cleaned_data["email"], password=form.cleaned_data["password"],
                                       org_name=form.cleaned_data["org_name"])
        except IntegrityError:
            # Two sign-ups with the same email at once: the unique username decides.
            form.add_error("email", EMAIL_TAKEN)
        else:
            login(request, user, backend=BACKEND)
            request.session[SESSION_ORG] = org.pk
            return redirect("dashboard:keys")
    return render(request, "registration/signup.html", {"form": form})


def invite_accept(request: HttpRequest, token: str) -> HttpResponse:
    """Signed in: a button that joins. Signed out: create an account here, or sign in and come back."""
    if request.user.is_authenticated:
        if request.method == "POST":
            return _joined(request, invitation_accept(token=token, user=request.user))
        return render(request, "registration/invite.html", {"form": None})
    form = AccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            joined = account_join(email=form.cleaned_data["email"], password=form.cleaned_data["password"],
                                  token=token)
        except IntegrityError:
            form.add_error("email", EMAIL_TAKEN)
        else:
            if joined is None:
                return _joined(request, None)
            user, membership = joined
            login(request, user, backend=BACKEND)
            return _joined(request, membership)
    login_url = f"{reverse('dashboard:login')}?{urlencode({'next': request.path})}"
    return render(request, "registration/invite.html", {"form": form, "login_url": login_url})


def _joined(request: HttpRequest, membership: Membership | None) -> HttpResponse:
    if membership is None:
        return render(request, "registration/invite_invalid.html", status=404)
    request.session[SESSION_ORG] = membership.org_id
    return redirect("dashboard:keys")


@login_required
@require_POST
def org_switch(request: HttpRequest) -> HttpResponse:
    try:
        org_id = int(request.POST.get("org", ""))
    except ValueError:
        org_id = None
    if org_id is not None:
        choose_org(request, org_id)
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = reverse("dashboard:keys")
    return redirect(target)


@login_required
def no_org(request: HttpRequest) -> HttpResponse:
    if current_membership(request.user) is not None:
        return redirect("dashboard:keys")
    return render(request, "dashboard/no_org.html")
