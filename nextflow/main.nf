#!/usr/bin/env nextflow
/*
 * microfetch worker pipeline: fetch and verify every run of a chunk, and with products
 * 'assembly' or 'both' assemble each verified run.
 * The work is done by bin/fetch_run.py and bin/assemble_run.py; this file only fans the runs
 * out. Directives (maxForks, maxRetries, errorStrategy, cpus, memory) live in nextflow.config
 * under withName: 'FETCH_RUN' and 'ASSEMBLE'. Parameters are documented in README.md.
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
    // what comes home: reads, assembly (contigs and report, reads deleted) or both
    products: String = 'reads'
    // assemble_run.py's options (run_chunk.py takes them from worker.json)
    assembler: String = 'skesa'
    min_contig: Integer = 200
    min_total_length: Integer = 0
    min_n50: Integer = 0
    // a failed assembly keeps its reads, so they come home instead
    reads_on_failure: Boolean = true
    // one assembly's cores and GB, and assemblies at once (run_chunk.py sizes them to the host)
    assembly_threads: Integer = 1
    assembly_memory_gb: Integer = 1
    assembly_parallel: Integer = 1
}

process FETCH_RUN {
    tag "${run}"
    // with assembly the reads go to ASSEMBLE instead, which publishes what comes home
    publishDir "${params.outdir}/${run}", mode: 'move', pattern: 'fetched/*', saveAs: { path -> file(path).name }, enabled: params.products == 'reads'
    publishDir "${params.verdicts}", mode: 'copy', pattern: '*.verdict.tsv'

    input:
    tuple val(run), val(urls), val(md5s), val(bytes)

    output:
    tuple val(run), path('fetched/*'), emit: reads, optional: true
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

process ASSEMBLE {
    tag "${run}"
    publishDir "${params.outdir}", mode: 'move'

    input:
    tuple val(run), path(reads, stageAs: 'fetched/*')

    output:
    path "${run}/*"

    script:
    // the same options as run_chunk.py's embedded path (products.assembly_options)
    def keep = params.products == 'both' ? '--keep-reads' : ''
    def drop = params.reads_on_failure ? '' : '--delete-reads-on-failure'
    // The verified reads are hard-linked (copied where links cannot go) into a run folder,
    // so deleting them there leaves FETCH_RUN's outputs whole.
    """
    mkdir -p '${run}'
    cp -lL fetched/* '${run}/' 2>/dev/null || cp -L fetched/* '${run}/'
    assemble_run.py '${run}' --run '${run}' --threads ${params.assembly_threads} \\
        --memory-gb ${params.assembly_memory_gb} --assembler '${params.assembler}' \\
        --min-contig ${params.min_contig} --min-total-length ${params.min_total_length} \\
        --min-n50 ${params.min_n50} ${keep} ${drop}
    """
}

workflow {
    runs = channel.fromPath(params.chunk, checkIfExists: true)
        .splitCsv(header: true, sep: '\t')
        .map { row -> tuple(row.run_accession, row.urls, row.md5s, row.bytes) }
    FETCH_RUN(runs)
    if (params.products != 'reads') {
        ASSEMBLE(FETCH_RUN.out.reads)
    }
}
