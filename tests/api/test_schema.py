"""The OpenAPI schema: valid, without warnings, and covering the contract's endpoints."""

import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

CONTRACT_PATHS = ["/api/v1/keys", "/api/v1/keys/{id}", "/api/v1/keys/{id}/rotate", "/api/v1/teams",
                  "/api/v1/teams/{id}", "/api/v1/budgets", "/api/v1/budgets/{id}", "/api/v1/logs",
                  "/api/v1/logs/{request_id}", "/api/v1/runs/{run_id}", "/api/v1/spend"]


def test_the_schema_validates_without_warnings(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file",
         str(tmp_path / "schema.yaml")],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stderr


def test_the_schema_is_served_with_every_contract_endpoint(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert set(CONTRACT_PATHS) <= set(response.json()["paths"])
