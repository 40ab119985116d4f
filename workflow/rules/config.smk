"""The validated config, read by covpipe's own loader (the one `covpipe check` uses) before the
Snakefile's `configfile:` directive lets Snakemake's loader see the default file."""

import os
import sys

from covpipe.config_errors import ConfigError
from covpipe.registry import PluginError


def workflow_config(default):
    """The validated config of this run: the default file (unless --configfile replaces it),
    every --configfile, then --config; exits with one `covpipe:` line if any is refused, or if
    an installed plugin cannot be loaded (covpipe.config reads the registries when imported).
    """
    settings = workflow.config_settings
    files = [os.path.relpath(p) for p in settings.configfiles]
    if not (files and settings.replace_workflow_config) and (
        os.path.exists(default) or not files
    ):
        files.insert(0, default)
    try:
        from covpipe.config import load_config

        return load_config(
            files, overrides=dict(settings.config), in_cluster_job=workflow.remote_exec
        )
    except ConfigError as exc:
        sys.exit(f"covpipe: invalid config: {exc}")
    except PluginError as exc:
        sys.exit(f"covpipe: {exc}")


CFG = workflow_config("config/config.yaml")
