"""`mlx plugins ...`, `mlx nodes` and `mlx audit` run as a user runs it (a process of its own
with MLX_API_URL / MLX_API_TOKEN: forked from the test's, or the installed command) against a
live `mlx serve`: tables, --json, manifests, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer, clean_env, forked_mlx, free_port, poll

# the console script pip installed beside this interpreter: `mlx` as a user runs it
MLX_COMMAND = str(Path(sys.executable).with_name("mlx"))
ERROR_LINE = re.compile(r"^error: [A-Z_]+: .+ \(request_id=(req_[0-9a-f]{16})\)$")


def mlx(
    server: LiveServer | None,
    *args: str,
    token: str | None = None,
    stdin: str | None = None,
    exec_: bool = False,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`mlx plugins ARGS`."""
    return mlx_top(server, "plugins", *args, token=token, stdin=stdin, exec_=exec_, **env)


def mlx_top(
    server: LiveServer | None,
    *args: str,
    token: str | None = None,
    stdin: str | None = None,
    exec_: bool = False,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`mlx ARGS`, with the server's URL and a token (admin unless given) in the environment:
    in a process forked from the test's (tests/conftest.py forked_mlx: its own file
    descriptors, environment and exit code, without a new interpreter's imports), or with
    `exec_` the installed command itself, for the tests about the command as a whole."""
    variables = {"COLUMNS": "200"}
    if server is not None:
        variables["MLX_API_URL"] = server.url
        variables["MLX_API_TOKEN"] = token or server.token("plugins:admin")
    variables.update(env)
    if not exec_:
        return forked_mlx(list(args), clean_env(**variables), stdin=stdin)
    return subprocess.run(
        [MLX_COMMAND, *args],
        env=clean_env(**variables),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(proc))


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def write_manifest(folder: Path, name: str, fmt: str, **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "toml":
        path = folder / "mlx-plugin.toml"
        lines = [
            f'name = "{name}"',
            'type = "data_source"',
            'version = "1.0.0"',
            f'description = "{name} from a TOML manifest"',
            'class_path = "mlx_test_plugins.EchoPlugin"',
            "",
            "[configuration_schema.pool_size]",
            'type = "integer"',
            "default = 5",
            "maximum = 50",
            "",
            "[metadata]",
            'capabilities = ["echo"]',
        ]
        lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
        path.write_text("\n".join(lines) + "\n")
    else:
        path = folder / f"{name}.json"
        body = {
            "name": name,
            "type": "data_source",
            "version": "1.0.0",
            "class_path": "mlx_test_plugins.EchoPlugin",
            "configuration_schema": {"pool_size": {"type": "integer", "maximum": 50}},
            **extra,
        }
        path.write_text(json.dumps(body))
    return path


@pytest.fixture
def registered(process_live_server: LiveServer, tmp_path: Path, unique_name: str) -> str:
    proc = mlx(
        process_live_server,
        "register",
        "-f",
        str(write_manifest(tmp_path, unique_name, "json")),
        "--json",
    )
    return str(as_json(proc)["id"])


# ---------------------------------------------------------------- tables and JSON


def test_list_prints_a_table_for_people(process_live_server: LiveServer) -> None:
    out = ok(mlx(process_live_server, "list", exec_=True))
    header = out.splitlines()[0].split()
    assert header == ["ID", "NAME", "TYPE", "VERSION", "STATUS", "HEALTH"]
    row = next(line for line in out.splitlines() if "plugin_sqlite_source_001" in line)
    assert row.split()[:4] == ["plugin_sqlite_source_001", "sqlite_source", "data_source", "1.0.0"]
    assert re.search(r"page 1: \d+ of \d+ plugin\(s\)", out)


LIST_HEADERS = ["ID", "NAME", "TYPE", "VERSION", "STATUS", "HEALTH"]


def list_table(out: str) -> list[list[list[str]]]:
    """The rows of `mlx plugins list`'s table, each cell as the pieces it was folded into
    (a row starts where the ID column has text after an ID that ended)."""
    lines = out.splitlines()
    assert lines[0].split() == LIST_HEADERS, out
    starts = [lines[0].index(name) for name in LIST_HEADERS] + [None]
    rows: list[list[list[str]]] = []
    for line in lines[2:-1]:  # below the rule, above the `page ...` line
        pieces = [line[a:b].strip() for a, b in zip(starts, starts[1:], strict=False)]
        continued = rows and rows[-1][0][-1].endswith(("_", "-", "."))
        if pieces[0].startswith("plugin_") and not continued:
            rows.append([[p] for p in pieces])
        else:
            for cell, piece in zip(rows[-1], pieces, strict=True):
                if piece:
                    cell.append(piece)
    return rows


@pytest.mark.parametrize("columns", ["80", None], ids=["80 columns", "a pipe"])
def test_list_fits_80_columns_and_never_cuts_a_word(
    process_live_server: LiveServer, tmp_path: Path, columns: str | None
) -> None:
    # a plugin whose id and name are longer than a narrow column (registered once a module)
    long_name = "a_rather_long_plugin_name_for_a_narrow_terminal"
    path = write_manifest(tmp_path, long_name, "json")
    assert mlx(process_live_server, "register", "-f", str(path)).returncode in (0, 4)
    answer = as_json(mlx(process_live_server, "list", "--all", "--json"))["data"]
    if columns is None:  # stdout is a file, as in a pipe: no COLUMNS, no terminal
        proc = forked_mlx(
            ["plugins", "list", "--all"],
            {
                k: v
                for k, v in clean_env(
                    MLX_API_URL=process_live_server.url,
                    MLX_API_TOKEN=process_live_server.token("plugins:read"),
                ).items()
                if k not in ("COLUMNS", "LINES")
            },
        )
    else:
        proc = mlx(process_live_server, "list", "--all", COLUMNS=columns)
    out = ok(proc)
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80, out
    rows = list_table(out)
    expected = [
        [p["id"], p["name"], p["type"], p["version"], p["status"], p["health"]["status"]]
        for p in answer
    ]
    assert [["".join(cell) for cell in row] for row in rows] == expected, out
    for row in rows:  # a folded cell breaks only after `_`, `-` or `.`: no word is cut
        for cell in row:
            assert all(piece.endswith(("_", "-", ".")) for piece in cell[:-1]), (cell, out)
    long_row = next(r for r in rows if "".join(r[1]) == long_name)
    assert len(long_row[1]) > 1  # the name did have to fold
    short_ids = [r[0] for r in rows if len("".join(r[0])) <= len("plugin_tabular_folder_001")]
    assert short_ids and all(len(cell) == 1 for cell in short_ids)  # short ids stay whole


def test_list_json_is_the_page_and_all_walks_every_page(process_live_server: LiveServer) -> None:
    page = as_json(mlx(process_live_server, "list", "--limit", "1", "--json"))
    assert len(page["data"]) == 1 and page["pagination"]["has_next"] is True
    total = page["pagination"]["total"]
    everything = as_json(mlx(process_live_server, "list", "--limit", "1", "--all", "--json"))
    assert len(everything["data"]) == total
    assert everything["data"][0] == page["data"][0]
    filtered = as_json(mlx(process_live_server, "list", "--type", "experiment_tracker", "--json"))
    assert [p["name"] for p in filtered["data"]] == ["local_tracker"]


def test_register_from_a_toml_manifest(process_live_server: LiveServer, tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "toml_plugin", "cli_toml_plugin", "toml")
    out = ok(mlx(process_live_server, "register", "-f", str(path)))
    assert "registered plugin_cli_toml_plugin_001 (cli_toml_plugin 1.0.0): status registered" in out
    assert re.search(r"class loadable\s+yes", out)
    detail = as_json(mlx(process_live_server, "get", "plugin_cli_toml_plugin_001", "--json"))
    assert detail["description"] == "cli_toml_plugin from a TOML manifest"
    assert detail["configuration_schema"]["pool_size"]["maximum"] == 50
    assert detail["metadata"]["capabilities"] == ["echo"]


def test_register_from_json_and_from_stdin(process_live_server: LiveServer, tmp_path: Path) -> None:
    path = write_manifest(tmp_path, "cli_json_plugin", "json")
    result = as_json(mlx(process_live_server, "register", "-f", str(path), "--json"))
    assert (result["id"], result["status"]) == ("plugin_cli_json_plugin_001", "registered")
    body = json.dumps(
        {
            "name": "cli_stdin_plugin",
            "type": "data_source",
            "version": "1.0.0",
            "class_path": "mlx_test_plugins.EchoPlugin",
        }
    )
    dry = as_json(
        mlx(
            process_live_server,
            "register",
            "-f",
            "-",
            "--dry-run",
            "--json",
            stdin=body,
            exec_=True,
        )
    )
    assert dry["dry_run"] is True


def test_register_fails_when_the_class_cannot_be_loaded(
    process_live_server: LiveServer, tmp_path: Path, unique_name: str
) -> None:
    path = write_manifest(tmp_path, unique_name, "json", class_path="mlx_test_plugins.NoSuchClass")
    dry = mlx(process_live_server, "register", "-f", str(path), "--dry-run")
    assert dry.returncode == 6, dry.stdout + dry.stderr
    assert one_error_line(dry).startswith(f"error: plugin_{unique_name}_001 would be registered")

    proc = mlx(process_live_server, "register", "-f", str(path))
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert re.search(r"class loadable\s+no", proc.stdout)  # the answer is still shown
    line = one_error_line(proc)
    assert line.startswith(
        f"error: plugin_{unique_name}_001 is registered with status error: its class cannot be"
        " loaded ("
    ), line
    assert "NoSuchClass" in line and line.endswith(f"mlx plugins register -f {path} again")

    again = write_manifest(tmp_path / "again", f"{unique_name}_ok", "json")
    answer = mlx(process_live_server, "register", "-f", str(again), "--json")
    assert answer.returncode == 0, answer.stdout + answer.stderr  # a loadable class: exit 0
    # --json: the API's answer on stdout, the one line on stderr, the same exit code
    broken = write_manifest(
        tmp_path / "broken", f"{unique_name}_b", "json", class_path="no_such_module.Plugin"
    )
    proc = mlx(process_live_server, "register", "-f", str(broken), "--json")
    assert proc.returncode == 6
    assert json.loads(proc.stdout)["status"] == "error"
    assert "its class cannot be loaded (" in one_error_line(proc)


def test_get_shows_the_plugin(process_live_server: LiveServer, registered: str) -> None:
    out = ok(mlx(process_live_server, "get", registered))
    assert re.search(rf"^id\s+{registered}\s*$", out, re.M)
    assert re.search(r"^operations\s+.*\becho\b", out, re.M)
    assert "pool_size" in out  # the schema table


def test_a_plugin_lifecycle_from_the_command_line(
    process_live_server: LiveServer, registered: str
) -> None:
    out = ok(
        mlx(
            process_live_server,
            "activate",
            registered,
            "-c",
            "pool_size=3",
            "-c",
            "region=eu",
            exec_=True,
        )
    )
    assert f"{registered} is active" in out and "health: healthy" in out
    update = as_json(mlx(process_live_server, "configure", registered, "pool_size=7", "--json"))
    assert update["updated_fields"] == ["pool_size"]
    config = as_json(mlx(process_live_server, "get", registered, "--json"))["configuration"]
    assert config == {"pool_size": 7, "region": "eu"}
    assert re.search(r"connectivity\s+pass", ok(mlx(process_live_server, "health", registered)))
    assert as_json(mlx(process_live_server, "health", registered, "--json"))["status"] == "healthy"
    out = ok(mlx(process_live_server, "invoke", registered, "add", "a=2", "b=3"))
    assert out.splitlines()[0] == "5" and f"{registered}.add:" in out
    echoed = as_json(
        mlx(
            process_live_server,
            "invoke",
            registered,
            "echo",
            "--args",
            '{"value": [1, "x"]}',
            "--json",
        )
    )
    assert echoed["result"] == [1, "x"]
    assert re.search(r"calls\s+2", ok(mlx(process_live_server, "metrics", registered)))
    metrics = as_json(
        mlx(process_live_server, "metrics", registered, "--granularity", "minute", "--json")
    )
    assert metrics["metrics"]["execution_count"] == 2 and metrics["granularity"] == "minute"
    assert f"{registered} is inactive" in ok(mlx(process_live_server, "deactivate", registered))


def test_configure_says_what_waits_for_a_restart_and_how_to_apply_it(
    process_live_server: LiveServer, tmp_path: Path, unique_name: str
) -> None:
    cold = {"dsn": {"type": "string", "default": "one", "hot_reload": False}}
    path = write_manifest(tmp_path, unique_name, "json", configuration_schema=cold)
    plugin = as_json(mlx(process_live_server, "register", "-f", str(path), "--json"))["id"]
    ok(mlx(process_live_server, "activate", plugin))

    out = ok(mlx(process_live_server, "configure", plugin, "dsn=two"))
    assert f"{plugin}: updated dsn" in out
    assert "pending restart: dsn (stored, not applied yet" in out
    assert f"restart with: mlx plugins configure {plugin} --allow-restart" in out
    assert as_json(mlx(process_live_server, "get", plugin, "--json"))["pending_restart"] == ["dsn"]
    assert re.search(
        r"^pending restart\s+dsn\s*$", ok(mlx(process_live_server, "get", plugin)), re.M
    )

    # the hint's command, as printed: applies what waited, and says which field it changed
    out = ok(mlx(process_live_server, "configure", plugin, "--allow-restart"))
    assert f"{plugin}: updated dsn" in out and "restarted: yes" in out
    assert "pending restart" not in out
    assert as_json(mlx(process_live_server, "get", plugin, "--json"))["pending_restart"] == []
    ok(mlx(process_live_server, "deactivate", plugin))


def answering_node(server: LiveServer) -> str:
    """The replica named by the X-MLX-Node header of an answer."""
    with server.client(scopes=("plugins:read",)) as http:
        response = http.get("/v1/plugins", params={"limit": 1})
    assert response.status_code == 200, response.text
    return response.headers["x-mlx-node"]


def test_nodes_shows_the_replica_and_what_it_runs(
    process_live_server: LiveServer, registered: str
) -> None:
    ok(mlx(process_live_server, "activate", registered))
    node_id = answering_node(process_live_server)
    server_pid = str(process_live_server.process.pid)

    out = ok(mlx_top(process_live_server, "nodes"))
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "HOST", "PID", "ALIVE", "HEARTBEAT", "PLUGINS"]
    row = next(line for line in lines if line.startswith(node_id + " ")).split()
    assert row[2:4] == [server_pid, "yes"]
    assert re.fullmatch(r"\d+s ago", " ".join(row[4:6]))
    running = re.search(r"(\d+) running", " ".join(row[6:]))
    assert running and int(running.group(1)) >= 1, row
    assert lines[-1] == f"1 node(s), 1 alive; answered by {node_id}"

    # The table fits 80 columns.
    narrow = ok(mlx_top(process_live_server, "nodes", COLUMNS="80"))
    assert max(len(line.rstrip()) for line in narrow.splitlines()) <= 80
    assert f"answered by {node_id}" in narrow

    nodes = as_json(mlx_top(process_live_server, "nodes", "--json"))
    assert [(n["id"], n["alive"], n["this_node"]) for n in nodes] == [(node_id, True, True)]
    instance = next(i for i in nodes[0]["instances"] if i["plugin_id"] == registered)
    assert instance["state"] == "running" and instance["pid"]

    # The health report shows every replica's view of the plugin, and who answered.
    health = ok(mlx(process_live_server, "health", registered))
    lines = health.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["NODE", "STATE"])
    assert lines[header].split() == ["NODE", "STATE", "PID", "HEALTH", "LAST", "ERROR"]
    assert lines[header + 2].split() == [node_id, "running", str(instance["pid"]), "healthy"]
    assert lines[-1] == f"answered by node {node_id}"
    report = as_json(mlx(process_live_server, "health", registered, "--json"))
    assert report["node_id"] == node_id
    assert [r["node_id"] for r in report["replicas"]] == [node_id]
    ok(mlx(process_live_server, "deactivate", registered))


def test_nodes_takes_url_and_token_options_and_needs_the_admin_scope(
    process_live_server: LiveServer,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    proc = mlx_top(
        None,
        "nodes",
        "--url",
        process_live_server.url,
        "--token",
        process_live_server.token("plugins:admin"),
        "--json",
        MLX_API_URL=unreachable,
    )
    assert as_json(proc)[0]["this_node"] is True
    proc = mlx_top(process_live_server, "nodes", token=process_live_server.token("plugins:read"))
    assert proc.returncode == 5 and "FORBIDDEN" in one_error_line(proc)
    proc = mlx_top(process_live_server, "nodes", MLX_API_URL=unreachable)
    assert proc.returncode == 7 and "could not connect" in one_error_line(proc)


def test_discover_scans_each_source_then_shows_one_table(
    process_server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    plugin_path = tmp_path / "plugins"
    write_manifest(plugin_path / "found_here", "cli_found_plugin", "toml")
    srv = process_server_factory(plugin_path=str(plugin_path))
    proc = mlx(srv, "discover")
    out = ok(proc)
    assert "scanned filesystem, pypi, git" in proc.stderr and "3/3" in proc.stderr
    row = next(line for line in out.splitlines() if "cli_found_plugin" in line)
    assert row.split()[:5] == ["cli_found_plugin", "1.0.0", "data_source", "filesystem", "yes"]
    assert re.search(r"^\d+ discovered: ", out, re.M)
    # One request per source (the access lines are written a moment after the answers).
    poll(
        lambda: srv.log_text().count("GET /v1/plugins/discover "),
        lambda n: n >= 3,
        timeout=5,
        what="three access lines",
    )
    assert srv.log_text().count("GET /v1/plugins/discover ") == 3

    proc = mlx(srv, "discover", "--source", "filesystem", "--auto-register", "--json")
    merged = json.loads(ok(proc))
    assert proc.stderr == ""  # no progress display
    assert merged["discovery_summary"]["auto_registered"] == 1
    assert merged["discovered_plugins"][0]["plugin_id"] == "plugin_cli_found_plugin_001"
    assert set(merged) == {"discovered_plugins", "discovery_summary", "errors"}


def test_validate_exits_4_when_the_composition_is_not_valid(
    process_live_server: LiveServer,
) -> None:
    out = ok(mlx(process_live_server, "validate", "sqlite_source", "local_tracker>=1.0"))
    assert "composition is valid" in out
    proc = mlx(process_live_server, "validate", "sqlite_source@1.0.0", "no_such_plugin", "--json")
    assert proc.returncode == 4
    result = json.loads(proc.stdout)
    assert result["composition_valid"] is False
    assert result["conflicts"][0]["plugins"] == ["no_such_plugin"]


# ---------------------------------------------------------------- errors and exit codes


def test_not_found_exits_3_with_one_line_and_the_request_id(
    process_live_server: LiveServer,
) -> None:
    proc = mlx(process_live_server, "get", "plugin_nothing_999")
    assert proc.returncode == 3 and proc.stdout == ""
    line = one_error_line(proc)
    match = ERROR_LINE.match(line)
    assert match, line
    assert line.startswith("error: PLUGIN_NOT_FOUND: Plugin 'plugin_nothing_999'")
    poll(
        process_live_server.log_text,
        lambda text: f"request_id={match.group(1)}" in text,
        timeout=5,
        what="the request's access line",
    )


def test_json_errors_are_the_api_envelope(process_live_server: LiveServer) -> None:
    """`--json` prints the API's error envelope unchanged (no key added, none dropped); the
    HTTP status is said by the exit code."""
    proc = mlx(process_live_server, "get", "plugin_nothing_999", "--json")
    assert proc.returncode == 3
    printed = json.loads(proc.stdout)
    assert f"request_id={printed['error']['request_id']}" in one_error_line(proc)
    with process_live_server.client() as http:
        direct = http.get("/v1/plugins/plugin_nothing_999")
    assert direct.status_code == 404
    answer = direct.json()
    answer["error"]["request_id"] = printed["error"]["request_id"]  # one per request
    assert printed == answer
    assert printed["error"]["code"] == "PLUGIN_NOT_FOUND"


def test_conflicts_exit_4(process_live_server: LiveServer, tmp_path: Path, registered: str) -> None:
    again = write_manifest(tmp_path, registered.removeprefix("plugin_")[:-4], "json")
    proc = mlx(process_live_server, "register", "-f", str(again))
    assert proc.returncode == 4
    assert ERROR_LINE.match(one_error_line(proc)) and "PLUGIN_ALREADY_EXISTS" in proc.stderr
    proc = mlx(process_live_server, "deactivate", registered)
    assert proc.returncode == 4 and "INVALID_STATE" in one_error_line(proc)


def test_invalid_input_exits_2(
    process_live_server: LiveServer, tmp_path: Path, registered: str
) -> None:
    proc = mlx(process_live_server, "list", "--limit", "1000")
    assert proc.returncode == 2
    assert ERROR_LINE.match(one_error_line(proc)) and "VALIDATION_ERROR" in proc.stderr
    proc = mlx(process_live_server, "activate", registered, "-c", "pool_size=500")
    assert proc.returncode == 2 and "INVALID_CONFIGURATION" in one_error_line(proc)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    proc = mlx(process_live_server, "register", "-f", str(bad))
    assert proc.returncode == 2
    assert one_error_line(proc).startswith(f"error: {bad} is not valid TOML")
    proc = mlx(process_live_server, "register", "-f", str(tmp_path / "missing.json"))
    assert proc.returncode == 2 and "cannot read" in one_error_line(proc)
    proc = mlx(process_live_server, "activate", registered, "-c", "no-equals-sign")
    assert proc.returncode == 2 and "is not KEY=VALUE" in one_error_line(proc)


def test_a_missing_token_exits_2_before_any_request(process_live_server: LiveServer) -> None:
    proc = mlx(None, "list", MLX_API_URL=process_live_server.url)
    assert proc.returncode == 2
    assert "MLX_API_TOKEN" in one_error_line(proc)


def test_bad_tokens_and_missing_scopes_exit_5(
    process_live_server: LiveServer, tmp_path: Path
) -> None:
    proc = mlx(process_live_server, "list", token="not-a-token")
    assert proc.returncode == 5 and "UNAUTHORIZED" in one_error_line(proc)
    path = write_manifest(tmp_path, "cli_forbidden_plugin", "json")
    proc = mlx(
        process_live_server,
        "register",
        "-f",
        str(path),
        token=process_live_server.token("plugins:read"),
    )
    assert proc.returncode == 5 and "FORBIDDEN" in one_error_line(proc)


def test_plugin_failures_exit_6(process_live_server: LiveServer, registered: str) -> None:
    ok(mlx(process_live_server, "activate", registered))
    proc = mlx(process_live_server, "invoke", registered, "fail", "message=no warehouse")
    assert proc.returncode == 6
    line = one_error_line(proc)
    assert ERROR_LINE.match(line) and "PLUGIN_EXECUTION_ERROR" in line
    assert "no warehouse" in line
    proc = mlx(process_live_server, "invoke", registered, "nope")
    assert proc.returncode == 3 and "OPERATION_NOT_FOUND" in one_error_line(proc)
    # the line names what the plugin does offer (the API's details.available_operations)
    operations = as_json(mlx(process_live_server, "get", registered, "--json"))["operations"]
    assert ERROR_LINE.match(one_error_line(proc))
    assert f"; available operations: {', '.join(sorted(operations))} (request_id=" in proc.stderr
    ok(mlx(process_live_server, "deactivate", registered))


def test_an_unreachable_service_exits_7(process_live_server: LiveServer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = mlx(process_live_server, "get", "plugin_sqlite_source_001", MLX_API_URL=url)
    assert proc.returncode == 7 and proc.stdout == ""
    line = one_error_line(proc)
    assert line.startswith(
        f"error: GET {url}/v1/plugins/plugin_sqlite_source_001: could not connect"
    )
    assert "is the service running?" in line


def test_url_and_token_options_override_the_environment(process_live_server: LiveServer) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlx_platform.cli.main",
            "plugins",
            "--url",
            process_live_server.url,
            "--token",
            process_live_server.token("plugins:read"),
            "get",
            "plugin_sqlite_source_001",
            "--json",
        ],
        env=clean_env(MLX_API_URL=f"http://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(ok(proc))["name"] == "sqlite_source"


def test_without_typer_the_command_says_how_to_install_it() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy\n"
            "sys.modules['typer'] = None  # as if the cli extra were not installed\n"
            "runpy.run_module('mlx_platform.cli.main', run_name='__main__')\n",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert 'pip install "mlx-platform[cli]"' in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- mlx audit

AUDIT_HEADERS = ["WHEN", "ACTOR", "ACTION", "PLUGIN", "OUTCOME", "CODE", "REQUEST"]


def audit_table(out: str) -> list[tuple[str, ...]]:
    """The rows of `mlx audit`'s table, each cell whole again: the pieces a folded cell left
    on the lines below are joined (the time, which wraps at its space, with a space)."""
    lines = out.splitlines()
    header = lines[0]
    assert header.split() == AUDIT_HEADERS, out
    starts = [header.index(name) for name in AUDIT_HEADERS] + [None]
    cells: list[list[list[str]]] = []
    for line in lines[2:-1]:  # below the rule, above the `page ...` line
        pieces = [line[a:b].strip() for a, b in zip(starts, starts[1:], strict=False)]
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", pieces[0]):
            cells.append([[p] for p in pieces])
        else:
            for column, piece in zip(cells[-1], pieces, strict=True):
                column.append(piece)
    return [
        (" ".join(p for p in row[0] if p), *("".join(column) for column in row[1:]))
        for row in cells
    ]


def audit_rows(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """What the table should show for these events of the API's answer."""
    return [
        (
            e["at"][:10] + " " + e["at"][11:19] + "Z",
            e["actor"],
            e["action"],
            e["plugin_id"] or "-",
            e["outcome"],
            e["error_code"] or "",
            e["request_id"] or "-",
        )
        for e in events
    ]


def test_audit_shows_who_changed_a_plugin_and_how_it_ended(
    process_live_server: LiveServer, registered: str
) -> None:
    refused = mlx(process_live_server, "activate", registered, "-c", "pool_size=999")  # maximum 50
    assert refused.returncode == 2, refused.stdout + refused.stderr
    match = ERROR_LINE.match(one_error_line(refused))
    assert match and "INVALID_CONFIGURATION" in match.group(0)
    refused_request = match.group(1)
    ok(mlx(process_live_server, "activate", registered))
    ok(mlx(process_live_server, "deactivate", registered))

    # --json prints the API's answer as it came.
    answer = as_json(mlx_top(process_live_server, "audit", "--plugin", registered, "--json"))
    with process_live_server.client() as http:
        direct = http.get("/v1/audit", params={"plugin_id": registered})
    assert answer == direct.json()
    events = answer["data"]
    assert [(e["actor"], e["action"], e["outcome"], e["error_code"]) for e in events] == [
        ("tester", "deactivate", "success", None),
        ("tester", "activate", "success", None),
        ("tester", "activate", "failure", "INVALID_CONFIGURATION"),
        ("tester", "register", "success", None),
    ]
    assert events[2]["request_id"] == refused_request
    assert answer["pagination"] == {
        "page": 1,
        "limit": 50,
        "total": 4,
        "has_next": False,
        "total_is_estimate": False,
    }

    out = ok(mlx_top(process_live_server, "audit", "--plugin", registered))
    assert audit_table(out) == audit_rows(events)
    assert out.splitlines()[-1] == "page 1: 4 of 4 event(s), newest first (50 per page)"
    # At 80 columns the table still fits, with nothing cut: cells fold onto more lines.
    narrow = ok(mlx_top(process_live_server, "audit", "--plugin", registered, COLUMNS="80"))
    assert max(len(line.rstrip()) for line in narrow.splitlines()) <= 80, narrow
    assert len(registered) > 20 and registered not in narrow  # the id did have to fold
    assert "…" not in narrow
    assert audit_table(narrow) == audit_rows(events)


def test_audit_filters_pass_through(process_live_server: LiveServer, registered: str) -> None:
    refused = mlx(process_live_server, "activate", registered, "-c", "pool_size=999")
    assert refused.returncode == 2
    ok(mlx(process_live_server, "activate", registered))
    someone = process_live_server.token("plugins:write", subject=f"someone_{registered}")
    ok(mlx(process_live_server, "deactivate", registered, token=someone))
    every = as_json(mlx_top(process_live_server, "audit", "--plugin", registered, "--json"))["data"]
    assert [e["action"] for e in every] == ["deactivate", "activate", "activate", "register"]

    def ids(*options: str) -> list[int]:
        answer = as_json(
            mlx_top(process_live_server, "audit", "--plugin", registered, *options, "--json")
        )
        return [e["id"] for e in answer["data"]]

    assert ids("--action", "activate") == [every[1]["id"], every[2]["id"]]
    assert ids("--outcome", "failure") == [every[2]["id"]]
    assert ids("--actor", f"someone_{registered}") == [every[0]["id"]]
    assert ids("--actor", "tester", "--action", "register") == [every[3]["id"]]
    assert ids("--since", every[0]["at"]) == [every[0]["id"]]
    assert ids("--until", every[-1]["at"]) == []
    assert ids("--since", every[-1]["at"], "--until", every[0]["at"]) == [
        e["id"] for e in every[1:]
    ]
    assert ids("--limit", "1", "--page", "2") == [every[1]["id"]]
    page = as_json(
        mlx_top(process_live_server, "audit", "--plugin", registered, "--limit", "3", "--json")
    )["pagination"]
    assert page == {"page": 1, "limit": 3, "total": 4, "has_next": True, "total_is_estimate": False}
    out = ok(mlx_top(process_live_server, "audit", "--plugin", registered, "--limit", "3"))
    assert out.splitlines()[-1] == (
        "page 1: 3 of 4 event(s), newest first (3 per page); more with --page 2"
    )

    # What the service refuses exits 2 with its one line; so do options out of range.
    proc = mlx_top(process_live_server, "audit", "--action", "explode")
    assert proc.returncode == 2 and "VALIDATION_ERROR" in one_error_line(proc)
    assert "action" in proc.stderr
    proc = mlx_top(process_live_server, "audit", "--since", "yesterday-ish")
    assert proc.returncode == 2 and "VALIDATION_ERROR" in one_error_line(proc)
    proc = mlx_top(process_live_server, "audit", "--limit", "101")
    assert proc.returncode == 2 and proc.stdout == ""


def test_audit_takes_url_and_token_options_and_needs_the_admin_scope(
    process_live_server: LiveServer,
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    proc = mlx_top(
        None,
        "audit",
        "--url",
        process_live_server.url,
        "--token",
        process_live_server.token("plugins:admin"),
        "--limit",
        "1",
        "--json",
        MLX_API_URL=unreachable,
    )
    assert as_json(proc)["success"] is True
    for scope in ("plugins:read", "plugins:write"):
        proc = mlx_top(process_live_server, "audit", token=process_live_server.token(scope))
        assert proc.returncode == 5 and "FORBIDDEN" in one_error_line(proc)
        assert proc.stdout == ""
    proc = mlx_top(
        process_live_server, "audit", "--json", token=process_live_server.token("plugins:read")
    )
    assert proc.returncode == 5 and json.loads(proc.stdout)["error"]["code"] == "FORBIDDEN"
    proc = mlx_top(process_live_server, "audit", MLX_API_URL=unreachable)
    assert proc.returncode == 7 and "could not connect" in one_error_line(proc)


# ---------------------------------------------------------------- delete, schema, --version


def test_delete_and_schema_from_the_command_line(process_live_server: LiveServer) -> None:
    from tests.conftest import register

    admin = process_live_server.client()
    plugin_id = register(
        admin,
        "cli_delete_schema",
        configuration_schema={
            "size": {"type": "integer", "default": 2, "minimum": 1},
            "password": {"type": "string", "secret": True, "required": True},
        },
        isolation="inprocess",
    )
    schema = as_json(mlx(process_live_server, "schema", plugin_id))
    assert schema["type"] == "object"
    assert schema["properties"]["size"]["default"] == 2
    assert schema["required"] == ["password"]

    r = admin.post(f"/v1/plugins/{plugin_id}/activate", json={"configuration": {"password": "pw"}})
    assert r.status_code == 200, r.text
    refused = mlx(process_live_server, "delete", plugin_id)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "INVALID_STATE" in one_error_line(refused)
    assert admin.get(f"/v1/plugins/{plugin_id}").status_code == 200  # still there

    assert "unregistered (deactivated first)" in ok(
        mlx(process_live_server, "delete", plugin_id, "--force")
    )
    assert admin.get(f"/v1/plugins/{plugin_id}").status_code == 404
    gone = mlx(process_live_server, "delete", plugin_id, "--json")
    assert gone.returncode == 3
    assert json.loads(gone.stdout)["error"]["code"] == "PLUGIN_NOT_FOUND"


def test_version_flag() -> None:
    from mlx_platform import __version__

    proc = mlx_top(None, "--version", exec_=True)
    assert ok(proc).strip() == f"mlx-platform {__version__}"
