"""``/api/v1/`` routes, as the contract spells them (no trailing slash); a trailing slash works too."""

from django.urls import path

from dashboard.api import views


def _slash_alias(view):
    """The same view at ``…/``, left out of the schema (which lists each path once)."""

    def with_trailing_slash(request, *args, **kwargs):
        return view(request, *args, **kwargs)

    # DRF checks CSRF itself, for session-authenticated calls only (org tokens need none).
    with_trailing_slash.csrf_exempt = True
    return with_trailing_slash


_ROUTES = [
    ("keys", views.KeyListView, "keys"),
    ("keys/<str:id>", views.KeyDetailView, "key"),
    ("keys/<str:id>/rotate", views.KeyRotateView, "key-rotate"),
    ("teams", views.TeamListView, "teams"),
    ("teams/<str:id>", views.TeamDetailView, "team"),
    ("budgets", views.BudgetListView, "budgets"),
    ("budgets/<str:id>", views.BudgetDetailView, "budget"),
    ("logs", views.LogListView, "logs"),
    ("logs/<str:request_id>", views.LogDetailView, "log"),
    ("runs", views.RunListView, "runs"),
    ("spend", views.SpendView, "spend"),
    ("credits", views.CreditsView, "credits"),
    ("models", views.ModelListView, "models"),
    ("webhooks", views.WebhookListView, "webhooks"),
    ("webhooks/<str:id>", views.WebhookDetailView, "webhook"),
]

app_name = "api"
urlpatterns = []
for route, view_class, name in _ROUTES:
    view = view_class.as_view()
    urlpatterns += [path(route, view, name=name), path(f"{route}/", _slash_alias(view))]

# Run ids are the client's own X-Nemo-Run values and may hold slashes, so this one takes the
# rest of the path (and so has no trailing-slash alias).
urlpatterns.append(path("runs/<path:run_id>", views.RunDetailView.as_view(), name="run"))
