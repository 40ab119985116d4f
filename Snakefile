"""covpipe: exact coverage, KL and Pass@N studies (arXiv 2510.15020).

Run with `snakemake --cores N` (the default profile in profiles/default is picked up).
"""

from snakemake.utils import min_version

min_version("9.0")


def workflow_config(default):
    """The validated config of this run: the default file (unless --configfile replaces it),
    every --configfile, then --config; exits with one `covpipe:` line if any is refused."""
    import os
    import sys

    from covpipe.config import ConfigError, load_config

    settings = workflow.config_settings
    files = [os.path.relpath(p) for p in settings.configfiles]
    if not (files and settings.replace_workflow_config) and (os.path.exists(default) or not files):
        files.insert(0, default)
    try:
        return load_config(
            files, overrides=dict(settings.config), in_cluster_job=workflow.remote_exec
        )
    except ConfigError as exc:
        sys.exit(f"covpipe: invalid config: {exc}")


# covpipe reads and validates the config itself, with the loader of `covpipe check`, before
# Snakemake's own `configfile:` loader sees the default file (bounded, strict, no templating).
CFG = workflow_config("config/config.yaml")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
