"""Run the README walk-through against a fresh server and write the answers into README.md.

    python scripts/walkthrough.py            # run every command, rewrite the README section
    python scripts/walkthrough.py --check    # run every command, fail if an answer's shape
                                             # (its keys and codes) differs from the README's
    --port N                                 # run on port N instead of 8000 (the tests do)

Every command runs in bash exactly as the README shows it, against `mlx serve` on
127.0.0.1:8000 with a fresh MLX_HOME, so what the README shows is what the commands answered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"
PORT = 8000
J = "python3 -m json.tool"
AUTH = '-H "Authorization: Bearer $TOKEN"'
JSON = "-H 'Content-Type: application/json'"
API = "http://127.0.0.1:8000/v1/plugins"

STEPS: list[tuple[str, str]] = [
    (
        "The admin token that `make serve` printed is also kept in `$MLX_HOME/admin.token`:",
        'export TOKEN="$(cat ~/.mlx-platform/admin.token)"\ncurl -s http://127.0.0.1:8000/healthz',
    ),
    (
        "**List plugins** (`GET /v1/plugins`): the three example plugins are registered on first start. "
        "Filters: `type`, `status`, `category`, `search`; `page`/`limit`; `sort`.",
        f'curl -s {AUTH} "{API}?type=data_source&limit=1" | {J}',
    ),
    (
        "Search is case-insensitive, over names and descriptions:",
        f"curl -s {AUTH} \"{API}?search=TRACK\" | python3 -c \"import json,sys; print([p['id'] for p in json.load(sys.stdin)['data']])\"",
    ),
    (
        "`sort` (beyond the spec) orders every page: `created_at` (the default), `name` or `type`, "
        "reversed by a leading `-`, ties by id; a search is ranked (name matches first) and takes no "
        "`sort`:",
        f"curl -s {AUTH} \"{API}?sort=-name\" | python3 -c \"import json,sys; print([p['name'] for p in json.load(sys.stdin)['data']])\"",
    ),
    (
        "**Plugin details** (`GET /v1/plugins/{id}`):",
        f"curl -s {AUTH} {API}/plugin_sqlite_source_001 | {J}",
    ),
    (
        "Make a small SQLite database for the example data source to read:",
        "python3 -c \"import sqlite3; c = sqlite3.connect('/tmp/mlx-demo.db'); "
        "c.execute('create table if not exists runs(id integer primary key, model text, auc real)'); "
        "c.execute('delete from runs'); "
        "c.executemany('insert into runs(model, auc) values (?, ?)', [('xgb', 0.91), ('lgbm', 0.93)]); c.commit()\"",
    ),
    (
        "**Activate** (`POST /v1/plugins/{id}/activate`): the configuration is validated against the "
        "plugin's schema, conflicts, dependencies and resources are checked, the plugin starts in its own "
        "worker process and passes a first health check:",
        f"curl -s {AUTH} {JSON} -X POST {API}/plugin_sqlite_source_001/activate \\\n"
        '  -d \'{"configuration": {"database_path": "/tmp/mlx-demo.db"}, "auto_start": true}\' | '
        + J,
    ),
    (
        "**Invoke** an operation of the active plugin (`POST /v1/plugins/{id}/invoke`):",
        f"curl -s {AUTH} {JSON} -X POST {API}/plugin_sqlite_source_001/invoke \\\n"
        '  -d \'{"operation": "query", "arguments": {"sql": "select model, auc from runs order by auc desc"}}\' | '
        + J,
    ),
    (
        "**Health** (`GET /v1/plugins/{id}/health`): the plugin's own check under a timeout, the worker's "
        "memory and CPU, and its dependencies:",
        f"curl -s {AUTH} {API}/plugin_sqlite_source_001/health | {J}",
    ),
    (
        "**Update the configuration** (`PATCH /v1/plugins/{id}/configuration`): applied hot when every "
        "changed field allows it:",
        f"curl -s {AUTH} {JSON} -X PATCH {API}/plugin_sqlite_source_001/configuration \\\n"
        '  -d \'{"configuration": {"max_rows": 500, "timeout": 10}, "restart_required": false}\' | '
        + J,
    ),
    (
        "`read_only` is declared `hot_reload: false`: changing it needs a restart, which happens only when "
        "the request allows it (`restart_required: true`):",
        f"curl -s {AUTH} {JSON} -X PATCH {API}/plugin_sqlite_source_001/configuration \\\n"
        '  -d \'{"configuration": {"read_only": false}, "restart_required": true}\' | ' + J,
    ),
    (
        "**Metrics** (`GET /v1/plugins/{id}/metrics`), merged from per-minute buckets of recorded invocations "
        "(`granularity` minute, hour or day; `start_time`/`end_time` in ISO 8601):",
        f'curl -s {AUTH} "{API}/plugin_sqlite_source_001/metrics?granularity=minute" | {J}',
    ),
    (
        "**Register** (`POST /v1/plugins`, scope `plugins:admin`) the spec's example as it is. Its class "
        "cannot be imported here, so it is recorded with status `error`, and `next_steps` says what to do:",
        f"curl -s {AUTH} {JSON} -X POST {API} -d '{{\n"
        '  "name": "custom_data_source", "type": "data_source", "version": "1.0.0",\n'
        '  "description": "Custom data source plugin",\n'
        '  "class_path": "my_company.plugins.CustomDataSource",\n'
        '  "configuration_schema": {"connection_string": {"type": "string", "required": true,\n'
        '                           "description": "Database connection string"}},\n'
        '  "metadata": {"capabilities": ["sql_queries", "batch_processing"], "conflicts_with": [],\n'
        '               "requires": [], "min_memory_mb": 512, "min_cpu_cores": 1}}\' | ' + J,
    ),
    (
        "The same name and version again is refused; every error has the same envelope, and its "
        "`request_id` is the `X-Request-ID` header of the answer:",
        f'curl -s -i {AUTH} {JSON} -X POST {API} -d \'{{"name": "custom_data_source", "type": "data_source",\n'
        '  "version": "1.0.0", "class_path": "my_company.plugins.CustomDataSource"}\' | grep -iE \'^(HTTP|x-request-id)|success\'',
    ),
    (
        "A secret field (`signing_key` of the local experiment tracker) is encrypted at rest and never "
        "shown; a configuration that breaks the schema is refused field by field:",
        f"curl -s {AUTH} {JSON} -X POST {API}/plugin_local_tracker_001/activate \\\n"
        '  -d \'{"configuration": {"experiment": 42}}\' | ' + J,
    ),
    (
        "",
        f"curl -s {AUTH} {JSON} -X POST {API}/plugin_local_tracker_001/activate \\\n"
        '  -d \'{"configuration": {"root": "/tmp/mlx-demo-runs", "signing_key": "s3cr3t-hmac-key"}}\' > /dev/null\n'
        f"curl -s {AUTH} {API}/plugin_local_tracker_001 | python3 -c \"import json,sys; print(json.load(sys.stdin)['data']['configuration'])\"",
    ),
    (
        "**Discover** (`GET /v1/plugins/discover`, scope `plugins:write`): installed packages that declare "
        "the entry-point group `mlx_platform.plugins`, and folders in `MLX_PLUGIN_PATH` holding a "
        "`mlx-plugin.toml`. Plugin code never runs in the service:",
        f'curl -s {AUTH} "{API}/discover?sources=pypi,filesystem" | {J}',
    ),
    (
        "**Validate a composition** (`POST /v1/plugins/validate-composition`), the spec's request as it is "
        "(none of these plugins is registered here, so each is reported):",
        f'curl -s {AUTH} {JSON} -X POST {API}/validate-composition -d \'{{"plugins": [\n'
        '  {"name": "snowflake", "version": "1.2.0"}, {"name": "databricks", "version": "2.0.0"},\n'
        '  {"name": "mlflow", "version": "1.8.0"}]}\' | ' + J,
    ),
    (
        "And a composition of registered plugins:",
        f'curl -s {AUTH} {JSON} -X POST {API}/validate-composition -d \'{{"plugins": [\n'
        '  {"name": "sqlite_source"}, {"name": "tabular_folder"}, {"name": "local_tracker"}]}\' | '
        + J,
    ),
    (
        "**Deactivate** (`POST /v1/plugins/{id}/deactivate`): new calls are refused, calls in flight get up "
        "to `graceful_shutdown_timeout` seconds, then the worker ends:",
        f"curl -s {AUTH} {JSON} -X POST {API}/plugin_sqlite_source_001/deactivate \\\n"
        '  -d \'{"force": false, "graceful_shutdown_timeout": 30}\' | ' + J,
    ),
    (
        "**Unregister** (`DELETE /v1/plugins/{id}`, scope `plugins:admin`; refused while active unless "
        "`?force=true`):",
        f"curl -s {AUTH} -X DELETE {API}/plugin_custom_data_source_001 | {J}",
    ),
    (
        "Tokens with less power: `mlx token create` signs with the server's secret. A read-only token "
        "cannot activate:",
        "READ=$(mlx token create --subject dashboard --scope plugins:read --ttl 3600)\n"
        f'curl -s -H "Authorization: Bearer $READ" -X POST {API}/plugin_sqlite_source_001/activate | {J}',
    ),
]


def run_steps(home: Path, port: int = PORT) -> list[tuple[str, str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    env["MLX_HOME"] = str(home)
    env["HOME"] = str(home.parent)  # so ~/.mlx-platform in the commands is this fresh home
    env["MLX_PORT"] = str(port)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlx_platform.cli.main", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start (is port 8000 free?)")
            time.sleep(0.2)
        # Each step runs in a bash of its own: give them the token the first step exports.
        env["TOKEN"] = (home / "admin.token").read_text().strip()
        out = []
        for text, command in STEPS:
            run = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            proc = subprocess.run(
                ["bash", "-c", run], env=env, capture_output=True, text=True, timeout=120
            )
            if proc.returncode != 0:
                raise SystemExit(f"command failed ({proc.returncode}):\n{command}\n{proc.stderr}")
            out.append((text, command, proc.stdout.rstrip("\n")))
        return out
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


_COMMAND_STARTS = ("curl", "export", "READ=", "python3", "mlx ")


def command_lines(command: str) -> list[str]:
    """The command as a console shows it: `$ ` before each new command, continuations as typed."""
    out, previous = [], ""
    for line in command.splitlines():
        new = line.startswith(_COMMAND_STARTS) and not previous.endswith("\\")
        out.append(f"$ {line}" if new else line)
        previous = line
    return out


def render(results: list[tuple[str, str, str]]) -> str:
    parts = [START, ""]
    for text, command, output in results:
        if text:
            parts += [text, ""]
        parts += ["```console", *command_lines(command), output, "```", ""]
    parts.append(END)
    return "\n".join(parts)


def shape(text: str) -> object:
    """The answer with values dropped: keys, error codes and status words remain."""
    try:
        value = json.loads(text)
    except ValueError:
        return re.sub(r"[0-9a-f]{8,}|\d+", "#", text)

    def walk(v: object, key: str = "") -> object:
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v[:1]]
        if key in ("code", "status", "success", "composition_valid", "class_loadable"):
            return v
        return type(v).__name__

    return walk(value)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".mlx-platform"
        port = PORT
        if "--port" in sys.argv:
            port = int(sys.argv[sys.argv.index("--port") + 1])
        results = run_steps(home, port)
    section = render(results)
    readme = README.read_text()
    before, _, rest = readme.partition(START)
    current, _, after = rest.partition(END)
    if "--check" in sys.argv:
        shown = re.findall(r"```console\n(.*?)```", current, re.S)
        if len(shown) != len(results):
            print(f"README shows {len(shown)} commands, the walk-through has {len(results)}")
            return 1
        answers = [
            "\n".join(block.splitlines()[len(cmd.splitlines()) :])
            for block, (_, cmd, _) in zip(shown, results, strict=True)
        ]
        bad = [
            cmd
            for (_, cmd, out), old in zip(results, answers, strict=True)
            if shape(out) != shape(old)
        ]
        for cmd in bad:
            print(f"answer differs in shape from the README's: {cmd.splitlines()[0]}")
        return 1 if bad else 0
    README.write_text(before + section + after)
    shutil.rmtree("/tmp/mlx-demo-runs", ignore_errors=True)
    print(f"README.md walk-through updated: {len(results)} commands run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
