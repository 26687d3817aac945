"""The plugin host: runs live plugin instances and reconciles them towards stored state."""
