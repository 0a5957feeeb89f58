from gateway.events import key_prefix
from gateway.unknown_routes import MAX_ROUTES, OTHER_ROUTES, UnknownRoutes


def test_routes_past_the_limit_are_counted_together():
    routes = UnknownRoutes()
    for number in range(MAX_ROUTES + 5):
        routes.seen(method="GET", path=f"/v1/x{number}", authorization=None)
    routes.seen(method="GET", path="/v1/x0", authorization=None)

    assert len(routes.counts) == MAX_ROUTES + 1
    assert routes.counts[OTHER_ROUTES] == 5 and routes.counts[("GET", "/v1/x0")] == 2
    assert routes.total == MAX_ROUTES + 6


def test_only_a_well_formed_nemo_key_is_named_by_its_prefix():
    secret = "sk-nemo-" + "A" * 43

    assert key_prefix(f"Bearer {secret}") == "A" * 12
    assert key_prefix("Bearer sk-nemo-short") is None
    assert key_prefix("Basic dXNlcjpwYXNz") is None
    assert key_prefix(None) is None
