"""covpipe: exact coverage, KL and Pass@N studies (arXiv 2510.15020).

Run with `snakemake --cores N` (the default profile in profiles/default is picked up).
"""

from snakemake.utils import min_version

min_version("9.0")


# covpipe reads and validates the config itself, with the loader of `covpipe check`, before
# Snakemake's own `configfile:` loader sees the default file (bounded, strict, no templating).
include: "workflow/rules/config.smk"


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
