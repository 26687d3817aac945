"""Find plugins where users keep them, without running plugin code in the service.

Sources (each one's failures are per-item entries of ``errors``, never a failed scan):

- ``filesystem`` (`filesystem`): the folders of `MLX_PLUGIN_PATH`; a folder holding
  ``mlx-plugin.toml`` is a plugin, and so is each direct subfolder that holds one.
- ``pypi``: installed distributions declaring the entry-point group ``mlx_platform.plugins``
  (`entry_points`: enumerated with importlib.metadata, targets read in one throwaway process
  per scan, cached), and the ``mlx-plugin-*`` projects of the package index
  `MLX_PLUGIN_INDEX_URL` (`index`).
- ``git``: the repositories of `MLX_PLUGIN_GIT_REPOS` (`git`).
- ``include_namespace``: `Plugin` subclasses in the modules under a package, read from source
  with `ast` (`namespace`).

`scan.collect` runs the sources side by side and lists them in the order above; every source
hands back a `common.Scan`. This package does I/O only: judging what was found (the rules)
and registering it is `core.discovery`'s.
"""
