from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.views import accounts, activity, assets, keys, log_panel, overview, playground, settings, spend, teams

app_name = "dashboard"

urlpatterns = [
    path("", accounts.home, name="home"),
    path("favicon.ico", assets.favicon, name="favicon"),
    path("overview/", overview.overview, name="overview"),
    path("signup/", accounts.signup, name="signup"),
    path("login/", accounts.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
    path("invite/<str:token>", accounts.invite_accept, name="invite"),
    path("org/switch/", accounts.org_switch, name="org_switch"),
    path("org/none/", accounts.no_org, name="no_org"),
    path("keys/", keys.keys, name="keys"),
    path("keys/new/", keys.key_new, name="key_new"),
    path("keys/<int:pk>/", keys.key_detail, name="key_detail"),
    path("keys/<int:pk>/secret/", keys.key_secret, name="key_secret"),
    path("keys/<int:pk>/edit/", keys.key_edit, name="key_edit"),
    path("keys/<int:pk>/revoke/", keys.key_revoke, name="key_revoke"),
    path("keys/<int:pk>/rotate/", keys.key_rotate, name="key_rotate"),
    path("teams/", teams.teams, name="teams"),
    path("teams/new/", teams.team_new, name="team_new"),
    path("teams/budget/", teams.org_budget, name="org_budget"),
    path("teams/<int:pk>/edit/", teams.team_edit, name="team_edit"),
    path("teams/<int:pk>/delete/", teams.team_remove, name="team_delete"),
    path("log/", activity.log, name="log"),
    path("log/<str:request_id>/", activity.log_detail, name="log_detail"),
    path("playground/", playground.playground, name="playground"),
    path("log/<str:request_id>/panel/", log_panel.log_panel, name="log_panel"),
    path("runs/", activity.runs, name="runs"),
    # Run ids are whatever the agent put in X-Nemo-Run, slashes included.
    path("runs/<path:run_id>", activity.run_detail, name="run_detail"),
    path("spend/", spend.spend, name="spend"),
    path("spend.csv", spend.spend_csv, name="spend_csv"),
    path("spend/calls.csv", spend.spend_calls_csv, name="spend_calls_csv"),
    path("settings/", settings.settings_page, name="settings"),
    path("settings/org/", settings.org_settings, name="org_settings"),
    path("settings/sinks/new/", settings.sink_new, name="sink_new"),
    path("settings/sinks/<int:pk>/delete/", settings.sink_remove, name="sink_delete"),
    path("settings/alerts/", settings.alert_settings, name="alert_settings"),
    path("settings/webhooks/new/", settings.webhook_new, name="webhook_new"),
    path("settings/webhooks/<int:pk>/delete/", settings.webhook_remove, name="webhook_delete"),
    path("settings/tokens/new/", settings.token_new, name="token_new"),
    path("settings/tokens/<int:pk>/revoke/", settings.token_revoke, name="token_revoke"),
    path("settings/members/invite/", settings.member_invite, name="member_invite"),
    path("settings/members/<int:pk>/role/", settings.member_role, name="member_role"),
    path("settings/members/<int:pk>/remove/", settings.member_remove, name="member_remove"),
]
