"""Property-based fuzzing of the service from its own OpenAPI schema (schemathesis): no input, valid
or not, may cause a 5xx. Bounded (a few examples per operation and mode) so it runs in the normal suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facelens.server import ServerSettings

from ._service import LiveService, make_key
from .conftest import portrait

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

EXAMPLES = 8  # per operation and generation mode


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveService, str]]:
    import httpx

    home: Path = tmp_path_factory.mktemp("fuzz-home")
    token = make_key(home, name="fuzz", admin=True)
    service = LiveService(ServerSettings(home=home, workers=2, rate_limit=0, max_request_bytes=1024 * 1024,
                                         request_timeout_s=60))
    client = httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert client.post("/v1/collections", json={"name": "fuzz"}).status_code == 201
    r = client.post("/v1/collections/fuzz/faces", files={"image": portrait("B000444").read_bytes()},
                    data={"person_id": "p1"})
    assert r.status_code == 200
    yield service, token
    service.stop()


def test_server_schemathesis_finds_no_server_errors(live: tuple[LiveService, str]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    service, token = live
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for op in operations:
        pinned: dict[str, Any] = {}
        if "{collection}" in op.path and not (op.method.upper() == "DELETE" and op.path.endswith("{collection}")):
            pinned = {"collection": "fuzz"}  # also reach past the 404 of an unknown collection
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in ({}, pinned) if pinned else ({},):

                @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters or None))
                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
                def check(case: Any) -> None:
                    nonlocal calls
                    response = case.call(base_url=service.url, headers=headers, timeout=60)
                    calls += 1
                    if response.status_code >= 500:
                        failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                        f"{response.text[:300]}")
                    elif response.status_code >= 400:
                        body = response.json()
                        assert set(body) == {"error"} and {"code", "message"} == set(body["error"]), body

                try:
                    check()
                except Unsatisfiable:  # no invalid input exists (an operation without parameters)
                    assert mode is GenerationMode.NEGATIVE, op.label
    assert calls > 200
    assert failures == []
