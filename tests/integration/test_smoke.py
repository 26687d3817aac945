from tests.conftest import LiveServer, assert_error, register


def test_healthz_answers_without_auth(live_server: LiveServer) -> None:
    with live_server.client(token="") as anonymous:
        r = anonymous.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_first_start_registers_the_example_plugins(admin) -> None:
    r = admin.get("/v1/plugins", params={"limit": 100})
    names = {p["name"] for p in r.json()["data"]}
    assert {"sqlite_source", "tabular_folder", "local_tracker"} <= names


def test_unknown_plugin_is_not_found(admin) -> None:
    assert_error(admin.get("/v1/plugins/plugin_nope_001"), 404, "PLUGIN_NOT_FOUND")


def test_register_then_get(admin, unique_name) -> None:
    pid = register(admin, unique_name)
    assert pid == f"plugin_{unique_name}_001"
    assert admin.get(f"/v1/plugins/{pid}").json()["data"]["status"] == "registered"
