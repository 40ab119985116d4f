rule evaluate:
    input:
        eval="results/{study}/data/horizon~{horizon}/eval.parquet",
        checkpoints=checkpoints_of,
    output:
        metrics="results/{study}/eval/model~{model}/horizon~{horizon}/metrics.parquet",
        log_ratios="results/{study}/eval/model~{model}/horizon~{horizon}/log_ratios.parquet",
    log:
        "logs/{study}/evaluate/model~{model}/horizon~{horizon}.log",
    benchmark:
        "benchmarks/{study}/evaluate/model~{model}/horizon~{horizon}.tsv"
    priority: chain_priority
    conda:
        "../envs/covpipe.yml"
    threads: 1
    resources:
        gpu=GPUS_PER_JOB,
    params:
        spec=evaluate_spec,
    script:
        "../scripts/evaluate.py"


rule aggregate:
    input:
        metrics=cell_metrics,
        train_logs=cell_train_logs,
        finetune_logs=cell_finetune_logs,
    output:
        metrics="results/{study}/metrics.parquet",
        train_log="results/{study}/train_log.parquet",
    log:
        "logs/{study}/aggregate.log",
    conda:
        "../envs/covpipe.yml"
    params:
        spec=covpipe.specs.aggregate_spec(),
    script:
        "../scripts/aggregate.py"


rule aggregate_selection:
    input:
        selection_tables,
    output:
        "results/{study}/selection.parquet",
    log:
        "logs/{study}/aggregate_selection.log",
    conda:
        "../envs/covpipe.yml"
    params:
        spec=covpipe.specs.aggregate_spec(),
    script:
        "../scripts/aggregate_selection.py"
