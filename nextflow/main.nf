#!/usr/bin/env nextflow
/*
 * microfetch worker pipeline: fetch and verify every run of a chunk.
 * The work is done by bin/fetch_run.py; this file only fans the runs out. Directives
 * (maxForks, maxRetries, errorStrategy) live in nextflow.config under withName: 'FETCH_RUN'.
 * Parameters are documented in README.md beside this file.
 */

params {
    // chunk.tsv: run_accession, urls, md5s, bytes (tab-separated, with a header)
    chunk: String = 'chunk.tsv'
    // verified files go to <outdir>/<run>/<file>
    outdir: String = 'out'
    // partial files, shared by every attempt of a run; '' keeps them in the task folder
    partial_dir: String = ''
    // one verdict per run (manifest rows), read by run_chunk.py
    verdicts: String = 'verdicts'
    // runs fetched at once (maxForks, executor.cpus)
    max_parallel: Integer = 4
    // retries of a file whose content is wrong, and of a task that died without a verdict
    retries: Integer = 3
    // seconds a transfer may stall before the attempt fails
    timeout: Float = 60.0
    // seconds without progress before a transient failure (outage, 5xx) is final
    transient_budget: Float = 600.0
}

process FETCH_RUN {
    tag "${run}"
    publishDir "${params.outdir}/${run}", mode: 'move', pattern: 'fetched/*', saveAs: { path -> file(path).name }
    publishDir "${params.verdicts}", mode: 'copy', pattern: '*.verdict.tsv'

    input:
    tuple val(run), val(urls), val(md5s), val(bytes)

    output:
    path 'fetched/*', optional: true
    path "${run}.verdict.tsv"

    script:
    // partial files outside the task folder survive a retry; 'partial' keeps them in the task
    def stage = params.partial_dir ? "${params.partial_dir}/${run}" : 'partial'
    """
    fetch_run.py --run '${run}' --urls '${urls}' --md5s '${md5s}' --bytes '${bytes}' \\
        --outdir fetched --partial-dir '${stage}' --report '${run}.verdict.tsv' \\
        --timeout ${params.timeout} --retries ${params.retries} \\
        --transient-budget ${params.transient_budget}
    """
}

workflow {
    runs = channel.fromPath(params.chunk, checkIfExists: true)
        .splitCsv(header: true, sep: '\t')
        .map { row -> tuple(row.run_accession, row.urls, row.md5s, row.bytes) }
    FETCH_RUN(runs)
}
