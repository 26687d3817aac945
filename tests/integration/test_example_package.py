"""The example plugin package under examples/: its folder manifest is discovered, registered,
activated and invoked by a real server."""

from __future__ import annotations

from tests.conftest import ROOT


def test_example_plugin_folder_is_discovered_and_runs(server_factory) -> None:
    src = ROOT / "examples" / "mlx-plugin-hello" / "src"
    # isolation "": the plugin's own (process), as a folder plugin needs its folder on the path
    server = server_factory(seed_builtin_plugins="false", plugin_path=str(src), isolation="")
    with server.client() as c:
        r = c.get("/v1/plugins/discover", params={"sources": "filesystem", "auto_register": "true"})
        assert r.status_code == 200, r.text
        found = {p["name"]: p for p in r.json()["data"]["discovered_plugins"]}
        assert found["hello"]["compatible"] and found["hello"]["auto_registered"], found
        pid = found["hello"]["plugin_id"]
        r = c.post(f"/v1/plugins/{pid}/activate", json={"configuration": {"greeting": "Hi"}})
        assert r.status_code == 200, r.text
        r = c.post(
            f"/v1/plugins/{pid}/invoke", json={"operation": "greet", "arguments": {"name": "Ada"}}
        )
        assert r.json()["data"]["result"] == "Hi, Ada!"
        assert (
            c.get(f"/v1/plugins/{pid}/health").json()["data"]["checks"]["connectivity"]["message"]
            == "1 greeting(s) so far"
        )
