"""The catalog's embedding models reach a database migrated before they were shipped."""

import importlib
from decimal import Decimal

import pytest
from django.apps import apps

from billing.models import CatalogModel

pytestmark = pytest.mark.django_db

EMBEDDING_MODELS = ["gemini-embedding-001", "text-embedding-005", "text-embedding-3-large", "text-embedding-3-small",
                    "text-multilingual-embedding-002"]


def test_the_embedding_models_are_added_and_a_price_an_operator_changed_stays():
    migration = importlib.import_module("billing.migrations.0004_load_embedding_models")
    CatalogModel.objects.filter(name__in=EMBEDDING_MODELS).exclude(name="text-embedding-005").delete()
    CatalogModel.objects.filter(name="text-embedding-005").update(input_price=Decimal("0.5"))

    migration.load(apps, None)

    embedding = [row.name for row in CatalogModel.objects.all() if "embeddings" in row.capabilities]
    assert sorted(embedding) == EMBEDDING_MODELS
    assert CatalogModel.objects.get(name="text-embedding-005").input_price == Decimal("0.5")
    assert CatalogModel.objects.get(name="text-embedding-3-small").output_price == Decimal("0")


def test_the_claude_models_get_their_cache_write_prices():
    migration = importlib.import_module("billing.migrations.0005_cache_write_price")
    CatalogModel.objects.update(cache_write_price=None)

    migration.load(apps, None)

    assert CatalogModel.objects.get(name="claude-3-7-sonnet").cache_write_price == Decimal("3.75")
    assert CatalogModel.objects.get(name="claude-opus-4-1").cache_write_price == Decimal("18.75")
    assert CatalogModel.objects.get(name="gemini-2.5-flash").cache_write_price is None
