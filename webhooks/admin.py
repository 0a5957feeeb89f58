"""The support staff's admin for budget alerts: webhooks (the secret never shown), their events
and deliveries with every attempt. Read-only: a delivery moves only through its outbox."""

from django.contrib import admin

from keys.admin import ReadOnlyAdminMixin
from webhooks.models import DeliveryAttempt, OrgAlerts, Webhook, WebhookDelivery, WebhookEvent


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["org", "url", "events", "enabled", "created"]
    list_select_related = ["org"]
    list_filter = ["enabled"]
    search_fields = ["org__name", "org__slug", "url"]
    fields = ["org", "url", "events", "enabled", "created"]


@admin.register(OrgAlerts)
class OrgAlertsAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["org", "credits_low_below", "credits_low", "credits_low_crossings", "last_scanned_id"]
    list_select_related = ["org"]
    search_fields = ["org__name", "org__slug"]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created", "org", "type", "event_id", "dedupe_key"]
    list_select_related = ["org"]
    list_filter = ["type"]
    search_fields = ["=event_id", "org__slug"]
    ordering = ["-created", "-id"]


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["created", "status", "error", "duration_ms"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-created"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created", "event", "webhook_url", "state", "attempts", "short_last_error", "delivered",
                    "next_attempt"]
    list_select_related = ["event", "webhook"]
    list_filter = ["state", "event__type"]
    search_fields = ["=event__event_id", "webhook__url", "webhook__org__slug"]
    ordering = ["-created", "-id"]
    inlines = [DeliveryAttemptInline]

    @admin.display(description="webhook")
    def webhook_url(self, delivery: WebhookDelivery) -> str:
        return delivery.webhook.url

    @admin.display(description="last error")
    def short_last_error(self, delivery: WebhookDelivery) -> str:
        return delivery.last_error[:120]
