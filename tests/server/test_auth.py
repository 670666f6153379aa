"""API keys: 401 in each API's own error shape without a valid key; Bearer, X-API-Key and Basic accepted;
result URLs handed to OpenAI clients carry a token instead; /health stays open."""

from __future__ import annotations

import httpx
import openai
import pytest
import webuiapi

from helpers.server_process import Server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    (folder / "keys.txt").write_text("# comment\nsecret-one\n")
    srv = Server(folder / "data", "--api-keys", str(folder / "keys.txt"), env={"KOLORS_API_KEYS": "env-key"})
    yield srv
    srv.stop()


def test_requests_without_a_valid_key_are_401_in_each_apis_shape(keyed):
    native = httpx.get(f"{keyed.url}/api/v1/jobs")
    assert native.status_code == 401 and native.json()["error"]["code"] == "invalid_api_key"
    wrong = httpx.get(f"{keyed.url}/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    a1111 = httpx.post(f"{keyed.url}/sdapi/v1/txt2img", json={"prompt": "x"})
    assert a1111.status_code == 401 and "API key" in a1111.json()["detail"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{keyed.url}/health").status_code == 200 and httpx.get(f"{keyed.url}/ready").status_code == 200


def test_valid_keys_in_every_form(keyed):
    for headers in ({"Authorization": "Bearer secret-one"}, {"X-API-Key": "env-key"}):
        assert httpx.get(f"{keyed.url}/api/v1/jobs", headers=headers).status_code == 200
    assert httpx.get(f"{keyed.url}/api/v1/jobs", auth=("user", "secret-one")).status_code == 200
    api = webuiapi.WebUIApi(baseurl=f"{keyed.url}/sdapi/v1", username="any", password="env-key")
    assert api.get_samplers()
    oa = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="secret-one", max_retries=0)
    result = oa.images.generate(prompt="a red circle", response_format="url", extra_body={"steps": 2, "seed": 1})
    url = result.data[0].url
    assert "token=" in url and httpx.get(url).status_code == 200  # the URL works without the header
    assert httpx.get(url.replace("token=", "token=0")).status_code == 401
