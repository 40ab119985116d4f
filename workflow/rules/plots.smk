rule plot:
    input:
        metrics="results/{study}/metrics.parquet",
        selection=study_selection_table,
    output:
        report(
            "results/{study}/figures/{figure}",
            category="{study}",
            caption="../report/figures.rst",
        ),
    log:
        "logs/{study}/plot/{figure}.log",
    conda:
        "../envs/covpipe.yml"
    params:
        spec=plot_spec,
    script:
        "../scripts/plots.py"
