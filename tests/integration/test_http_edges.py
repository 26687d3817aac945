"""HTTP edges a fuzzer finds: wrong methods and bodies that are not even text."""

from __future__ import annotations

from tests.conftest import assert_error


def test_wrong_method_answers_405_listing_every_method_of_the_path(live_server) -> None:
    anonymous = live_server.client(token="")
    r = anonymous.put("/v1/plugins")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers["allow"] == "GET, POST"
    r = anonymous.put("/v1/plugins/plugin_x_001")
    assert r.headers["allow"] == "DELETE, GET"


def test_body_that_is_not_utf8_is_a_validation_error(admin) -> None:
    r = admin.post(
        "/v1/plugins", content=b"\x80\x81not text", headers={"Content-Type": "application/json"}
    )
    err = assert_error(r, 422, "VALIDATION_ERROR")
    assert "body" in err["details"]


def test_body_that_is_not_utf8_without_token_is_unauthorized(live_server) -> None:
    r = live_server.client(token="").post(
        "/v1/plugins",
        content=b"\xff\xfe",
        headers={"Content-Type": "application/json"},
    )
    assert_error(r, 401, "UNAUTHORIZED")
