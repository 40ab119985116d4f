rule plot:
    input:
        metrics="results/{study}/metrics.parquet",
        selection=lambda wc: (
            [f"results/{wc.study}/selection.parquet"]
            if STUDIES[wc.study]["selection"]
            else []
        ),
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
