"""Org tokens (``Authorization: Bearer nm-…``) for scripts using the management API."""

from rest_framework import authentication, exceptions

from keys.selectors import org_token_authenticate


class OrgTokenUser:
    """Stands in for a user: a token acts for its org as an admin would, and is nobody else."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, token) -> None:
        self.token = token
        self.org = token.org

    def __str__(self) -> str:
        return f"token {self.token.prefix}"


class OrgTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(f"{self.keyword} nm-"):
            return None
        token = org_token_authenticate(header[len(self.keyword) + 1 :].strip())
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return OrgTokenUser(token), token

    def authenticate_header(self, request) -> str:
        return self.keyword
