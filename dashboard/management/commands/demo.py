"""demo: what trying the product needs, a dashboard login, its org with credits and a key."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from billing.services import organization_create_with_credits
from keys.audit import Actor
from keys.models import Organization
from keys.services import virtual_key_create

DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "nemo-demo-password"


class Command(BaseCommand):
    help = "Creates the demo org and user if missing, issues a fresh demo key and prints how to use it."

    def handle(self, *args, **options) -> None:
        actor = Actor.system("command:demo")
        User = get_user_model()
        user = User.objects.filter(username=DEMO_EMAIL).first()
        if user is None:
            user = User.objects.create_user(username=DEMO_EMAIL, email=DEMO_EMAIL, password=DEMO_PASSWORD)
        org = Organization.objects.filter(memberships__user=user).first() or organization_create_with_credits(
            name="Demo", owner=user, actor=actor
        )
        _, secret = virtual_key_create(org=org, name="demo-agent", actor=actor)
        self.stdout.write(
            f"Demo org {org.slug!r}; dashboard login {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
            f"Demo key: {secret}\n"
            "Try: curl http://127.0.0.1:8000/v1/chat/completions "
            f"-H 'Authorization: Bearer {secret}' -H 'Content-Type: application/json' "
            "-d '{\"model\": \"gemini-2.5-flash\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}'"
        )
