rule select_data:
    output:
        "results/{study}/data/horizon~{horizon}/select.parquet",
    log:
        "logs/{study}/select_data/horizon~{horizon}.log",
    conda:
        "../envs/covpipe.yml"
    params:
        spec=select_data_spec,
    script:
        "../scripts/select_data.py"


rule select:
    input:
        select="results/{study}/data/horizon~{horizon}/select.parquet",
        checkpoints=checkpoints_of,
        metrics="results/{study}/eval/model~{model}/horizon~{horizon}/metrics.parquet",
    output:
        "results/{study}/select/model~{model}/horizon~{horizon}/selection.parquet",
    log:
        "logs/{study}/select/model~{model}/horizon~{horizon}.log",
    benchmark:
        "benchmarks/{study}/select/model~{model}/horizon~{horizon}.tsv"
    priority: chain_priority
    conda:
        "../envs/covpipe.yml"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    params:
        spec=select_spec,
    script:
        "../scripts/select.py"
