{#-
  Pre-hook of the quarantine: collects the rows of a CSV landing source that DuckDB's reader
  skips (its external_location reads with ignore_errors=true), so that they are quarantined and
  not lost. A ragged row, with more or fewer fields than its file's header, is `ragged_row`;
  any other row the reader cannot parse (e.g. invalid UTF-8) is `unparseable_line`.

  No read_csv option keeps a long row whole (strict_mode=false silently drops its extra fields)
  and store_rejects does not work with union_by_name, so each landing file not yet settled in
  {{ this }} is read once more on its own with the source's options and store_rejects. DuckDB
  records exactly the rows it skipped, each with its text (a quoted line break included), so the
  quarantine agrees with the rows the bronze models read: landing rows = bronze + quarantine.

  The rows go to a temporary table of this connection (memory; never persisted), which
  release_landing_rejects drops in the post-hook; landing_rejects_table names it. Returns the
  SQL the hook runs. No value reaches the SQL text: file names only.
-#}
{% macro stage_landing_rejects(source_name, table_name) -%}
    {%- set staged = landing_rejects_table(source_name, table_name) -%}
    {%- if not execute -%}
        {{ return('select 1') }}
    {%- endif -%}
    {%- set glob = landing_source_glob(source_name, table_name) -%}
    {%- set node = graph.sources.get('source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name) -%}
    {%- set location = node.config.external_location -%}
    {%- set glob_literal = "'" ~ glob ~ "'" -%}
    {%- if not location.startswith('read_csv(' ~ glob_literal ~ ',') or not location.endswith(')') -%}
        {{ exceptions.raise_compiler_error("stage_landing_rejects: source " ~ source_name ~ "." ~ table_name ~ " is not read with read_csv('<glob>', ...)") }}
    {%- endif -%}
    {#- The source's own options, minus union_by_name (a single file; store_rejects refuses it). -#}
    {%- set options = location[('read_csv(' ~ glob_literal)|length:-1].replace(', union_by_name=true', '') -%}
    {%- set settled = [] -%}
    {%- if is_incremental() -%}
        {%- set settled = _landing_ingested_files(source_name, table_name, "source_name = '" ~ source_name ~ "." ~ table_name ~ "'")[0] -%}
    {%- endif -%}
    {#- A file the reader cannot read at all is skipped by the build (landing_readable_relation). -#}
    {%- set files = run_query("select file from glob(" ~ _privacy_string_literal(glob) ~ ") where pl_landing_file_readable(file) order by file").columns[0].values() -%}
    {%- do run_query("drop table if exists pl_rejects_scan; drop table if exists pl_rejects_errors") -%}
    {%- for file in files if modules.re.search('[^/]+$', file).group(0) not in settled -%}
        {%- do run_query(
            "select count(*) from read_csv(" ~ _privacy_string_literal(file) ~ options
            ~ ", store_rejects=true, rejects_scan='pl_rejects_scan', rejects_table='pl_rejects_errors')"
        ) -%}
    {%- endfor -%}
    {#- One row per skipped row (a row can have several errors); DuckDB creates no reject tables
        when no file was read. -#}
    {%- set scanned = run_query("select count(*) from duckdb_tables() where temporary and table_name = 'pl_rejects_errors'").columns[0].values()[0] -%}
    {%- set statement -%}
        create or replace temporary table {{ staged }} as
        {%- if scanned %}
        select
            regexp_extract(any_value(scans.file_path), '[^/]+$') as source_file,
            case
                when bool_or(errors.error_type in ('TOO MANY COLUMNS', 'MISSING COLUMNS')) then 'ragged_row'
                else 'unparseable_line'
            end as reject_reason,
            any_value(errors.csv_line) as raw_record
        from pl_rejects_errors as errors
        inner join pl_rejects_scan as scans
            on errors.scan_id = scans.scan_id and errors.file_id = scans.file_id
        group by errors.scan_id, errors.file_id, errors.line;
        drop table pl_rejects_errors;
        drop table pl_rejects_scan
        {%- else %}
        select
            cast(null as varchar) as source_file,
            cast(null as varchar) as reject_reason,
            cast(null as varchar) as raw_record
        where false
        {%- endif %}
    {%- endset -%}
    {{ return(statement) }}
{%- endmacro %}
