rule finetune:
    input:
        "results/{study}/train/model~{model}/horizon~{horizon}/checkpoints.pt",
    output:
        checkpoints="results/{study}/finetune/model~{model}/horizon~{horizon}/checkpoints.pt",
        log_table="results/{study}/finetune/model~{model}/horizon~{horizon}/train_log.parquet",
    log:
        "logs/{study}/finetune/model~{model}/horizon~{horizon}.log",
    benchmark:
        "benchmarks/{study}/finetune/model~{model}/horizon~{horizon}.tsv"
    priority: chain_priority
    conda:
        "../envs/covpipe.yml"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    params:
        spec=finetune_spec,
    script:
        "../scripts/finetune.py"
