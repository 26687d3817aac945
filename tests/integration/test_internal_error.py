"""A fault of the service itself: INTERNAL_ERROR in the envelope, the reason in the log only."""

from __future__ import annotations

from cryptography.fernet import Fernet

from tests.conftest import assert_error, plugin_body


def test_service_fault_answers_internal_error_without_trace(server_factory, tmp_path) -> None:
    home = tmp_path / "home"
    first = server_factory(
        home=home, seed_builtin_plugins="false", secret_key=Fernet.generate_key().decode()
    )
    with first.client() as c:
        body = plugin_body(
            "vault", configuration_schema={"password": {"type": "string", "secret": True}}
        )
        pid = c.post("/v1/plugins", json=body).json()["data"]["id"]
        r = c.patch(
            f"/v1/plugins/{pid}/configuration", json={"configuration": {"password": "k-0ld-s3cret"}}
        )
        assert r.status_code == 200, r.text
    first.stop()

    # The operator restarts the service with another encryption key: stored secrets can no
    # longer be read. That is the service's fault to report, not the client's.
    second = server_factory(
        home=home, seed_builtin_plugins="false", secret_key=Fernet.generate_key().decode()
    )
    with second.client() as c:
        r = c.patch(f"/v1/plugins/{pid}/configuration", json={"configuration": {"password": "new"}})
        err = assert_error(r, 500, "INTERNAL_ERROR")
        assert r.headers["x-request-id"] in err["message"]
        assert "MLX_SECRET_KEY" not in r.text and "Traceback" not in r.text
    log = second.log_text()
    assert "MLX_SECRET_KEY differs" in log
    assert r.headers["x-request-id"] in log
    assert "k-0ld-s3cret" not in log
