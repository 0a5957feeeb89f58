"""The audit trail: who did what to which org."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from keys.models import AuditEvent, Organization


@dataclass(frozen=True)
class Actor:
    """Whoever performs a write: a signed-in user, an org token, or a command."""

    label: str
    user: AbstractBaseUser | None = None

    @classmethod
    def of_user(cls, user: AbstractBaseUser) -> "Actor":
        return cls(label=user.get_username(), user=user)

    @classmethod
    def system(cls, what: str) -> "Actor":
        return cls(label=what)


def audit_record(
    *, org: Organization, actor: Actor, action: str, target: Any, data: dict | None = None
) -> AuditEvent:
    return AuditEvent.objects.create(
        org=org,
        actor=actor.user,
        actor_label=actor.label,
        action=action,
        target_type=type(target).__name__,
        target_id=str(target.pk),
        data=data or {},
    )
