rule data:
    output:
        train="results/{study}/data/horizon~{horizon}/train.parquet",
        eval="results/{study}/data/horizon~{horizon}/eval.parquet",
    log:
        "logs/{study}/data/horizon~{horizon}.log",
    priority: chain_priority
    conda:
        "../envs/covpipe.yml"
    params:
        spec=data_spec,
    script:
        "../scripts/data.py"
