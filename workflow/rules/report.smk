# The HTML report's landing page (workflow/report/workflow.rst) reads its headline numbers through
# this name: Snakemake renders that page with the config and the report's files only, so the page
# reaches the Snakefile's namespace, as Snakemake's own captions reach `config` (a file's
# job.rule.module_globals). The numbers are computed in covpipe.report.
from covpipe.report import headlines as report_headlines
