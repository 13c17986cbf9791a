"""Schema-driven fuzzing of /api/v1: schemathesis generates requests from the API's own
OpenAPI schema, valid and not, with the token, against the recorded world. No answer may
be a 500, and every answer must be one the schema declares, in the shape it declares.

The stream is left out: it answers for as long as the client listens (its own tests cover
it), and a fuzzer waits for a body to end.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from support.api_world import ApiWorld, auth


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    w = ApiWorld(tmp_path_factory.mktemp("fuzz")).populate()
    yield w
    w.close()


def test_no_500_and_every_answer_in_the_schema(world: ApiWorld) -> None:
    from api.server import create_api
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_api(world.service))
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/v1/stream":
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            # A request the schema allows may still be refused for what it means (an unknown
            # class, a pid that is not running): that is a 4xx, and allowed.
            case.call_and_validate(headers=auth(), excluded_checks=[
                schemathesis.checks.positive_data_acceptance])

        fuzz()
        tried.append(f"{operation.method.upper()} {operation.path}")
    # Every operation of the schema was fuzzed, the commands among them.
    assert "POST /api/v1/labels" in tried and "GET /api/v1/processes" in tried
    assert len(tried) >= 20, tried
