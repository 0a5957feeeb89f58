from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self) -> None:
        from django.contrib import admin

        from dashboard.forms import AdminLoginForm

        # The admin's sign-in goes through the same throttle as the dashboard's.
        admin.site.login_form = AdminLoginForm
