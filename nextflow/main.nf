#!/usr/bin/env nextflow
/*
 * microfetch worker pipeline: fetch and verify every run of a chunk.
 * The work is done by bin/fetch_run.py; this file only fans the runs out.
 * Parameters are documented in README.md beside this file.
 */
nextflow.enable.dsl = 2

params.chunk        = 'chunk.tsv'
params.outdir       = 'out'
params.max_parallel = 4
params.retries      = 3
params.timeout      = 60

process FETCH_RUN {
    tag "${run}"
    maxForks params.max_parallel
    errorStrategy { task.attempt <= params.retries ? 'retry' : 'ignore' }
    maxRetries params.retries
    publishDir "${params.outdir}/${run}", mode: 'move', saveAs: { path -> file(path).name }

    input:
    tuple val(run), val(urls), val(md5s), val(bytes)

    output:
    path 'fetched/*'

    script:
    """
    fetch_run.py --run '${run}' --urls '${urls}' --md5s '${md5s}' --bytes '${bytes}' \\
        --outdir fetched --timeout ${params.timeout} --retries 0
    """
}

workflow {
    Channel.fromPath(params.chunk, checkIfExists: true)
        | splitCsv(header: true, sep: '\t')
        | map { row -> tuple(row.run_accession, row.urls, row.md5s, row.bytes) }
        | FETCH_RUN
}
