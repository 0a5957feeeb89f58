"""Org tokens (``Authorization: Bearer nm-…``) for scripts using the management API."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from keys.models import OrgToken
from keys.secrets import KEY_SCHEME, TOKEN_SCHEME
from keys.selectors import org_token_authenticate


class OrgTokenUser:
    """Stands in for a user: a token acts for its org as an admin would, and is nobody else."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, token: OrgToken) -> None:
        self.token = token
        self.org = token.org

    def __str__(self) -> str:
        return f"token {self.token.prefix}"


class OrgTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[OrgTokenUser, OrgToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if header.startswith(f"{self.keyword} {KEY_SCHEME}"):
            raise exceptions.AuthenticationFailed("The management API takes an org token (nm-…), not a virtual key.")
        if not header.startswith(f"{self.keyword} {TOKEN_SCHEME}"):
            return None
        token = org_token_authenticate(header[len(self.keyword) + 1 :].strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return OrgTokenUser(token), token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class OrgTokenScheme(OpenApiAuthenticationExtension):
    """Documents org tokens in the OpenAPI schema as a bearer scheme."""

    target_class = OrgTokenAuthentication
    name = "orgToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "nm-…",
            "description": "An org token from `manage.py createtoken`; it acts for its org with the admin role.",
        }
