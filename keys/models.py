"""Tenants and their credentials.

Secrets (virtual keys, org tokens) are stored as a short lookup prefix plus a keyed hash;
the secret itself is shown once, at creation, and never stored.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    cache_enabled = models.BooleanField(
        default=False, help_text="Answer identical requests from the response cache by default."
    )
    store_prompts = models.BooleanField(
        default=False, help_text="Keep prompt and response bodies in the request log."
    )
    default_max_tokens = models.PositiveIntegerField(
        default=16_384, help_text="The most output a call that names no limit is sent (a key may set its own)."
    )
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "name"], name="team_name_unique_in_org")]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="one_membership_per_org")]

    def __str__(self) -> str:
        return f"{self.user} in {self.org} ({self.role})"


class Invitation(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    accepted = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.org}"


# The largest rate or parallel limit a key can hold: its columns are PositiveIntegerFields,
# 32-bit on every database Django supports.
MAX_KEY_LIMIT = 2**31 - 1


class VirtualKey(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="keys")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=24, unique=True, help_text="Public lookup part of the secret.")
    secret_hash = models.CharField(max_length=64)
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: every model.")
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    max_parallel = models.PositiveIntegerField(null=True, blank=True)
    default_max_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="The most output a call that names no limit is sent; empty: the org's."
    )
    run_budget = models.DecimalField(
        max_digits=18, decimal_places=6, null=True, blank=True,
        help_text="The most a run (X-Nemo-Run) of this key may spend, USD; a call's X-Nemo-Run-Budget may lower it.")
    run_max_steps = models.PositiveIntegerField(null=True, blank=True,
                                                help_text="The most calls a run of this key may make.")
    loop_limit = models.PositiveIntegerField(
        default=0, help_text="Stop a run once its answers asked for the same tool call this many times; 0: off.")
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["org", "created"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked is None and (self.expires is None or self.expires > now)


class OrgToken(models.Model):
    """A management-API token (``nm-…``) for scripts, scoped to one org."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=24, unique=True)
    secret_hash = models.CharField(max_length=64)
    revoked = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEvent(models.Model):
    """Who did what to which org. Every write service records one."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_label = models.CharField(max_length=200, help_text="The user, token or command that acted.")
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=60)
    target_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["org", "-created"])]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type}:{self.target_id}"
