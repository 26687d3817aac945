"""A minimal plugin: a data source that greets, to copy when writing your own."""

from __future__ import annotations

from typing import Any

from mlx_platform.plugins import Plugin, PluginError, operation


class HelloSource(Plugin):
    # The manifest, read by discovery without starting the plugin.
    name = "hello"
    type = "data_source"
    version = "0.1.0"
    description = "Greets whoever asks; shows configure, start, health and an operation"
    configuration_schema = {
        "greeting": {"type": "string", "default": "Hello", "description": "First word"},
        "max_name_length": {"type": "integer", "default": 40, "minimum": 1, "maximum": 200},
    }
    metadata = {"capabilities": ["greetings"], "min_memory_mb": 16, "min_python_version": "3.11"}

    def configure(self, config: dict[str, Any]) -> None:
        super().configure(config)  # keeps self.config; called again on hot updates

    def start(self) -> None:
        self.calls = 0

    def health_check(self) -> dict[str, Any]:
        return {"status": "healthy", "message": f"{self.calls} greeting(s) so far"}

    @operation
    def greet(self, name: str) -> str:
        if len(name) > int(self.config.get("max_name_length", 40)):
            raise PluginError("that name is too long")
        self.calls += 1
        return f"{self.config.get('greeting', 'Hello')}, {name}!"
