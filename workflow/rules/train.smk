rule train:
    input:
        "results/{study}/data/horizon~{horizon}/train.parquet",
    output:
        checkpoints="results/{study}/train/model~{model}/horizon~{horizon}/checkpoints.pt",
        log_table="results/{study}/train/model~{model}/horizon~{horizon}/train_log.parquet",
    log:
        "logs/{study}/train/model~{model}/horizon~{horizon}.log",
    benchmark:
        "benchmarks/{study}/train/model~{model}/horizon~{horizon}.tsv"
    priority: chain_priority
    conda:
        "../envs/covpipe.yml"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    params:
        spec=train_spec,
    script:
        "../scripts/train.py"
