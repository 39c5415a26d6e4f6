{#-
  Idempotent bronze, file by file. On a full build every landing row passes. On an incremental
  run a landing file this table already holds rows from is skipped without being opened (its
  name is listed as a constant, which DuckDB turns into a file filter), unless the file was
  modified after its last ingest: a re-delivered file is read again and only its rows whose
  ingest key the table lacks pass. So an incremental run reads the new and changed files only.
  A landing file's rows reach a table in one Delta commit, so a file the table holds was read
  whole. A file none of whose rows the table kept (all rejected or erased) is read again on the
  next run and again keeps nothing. `where` narrows the table's rows (the quarantine holds
  several sources).
-#}
{% macro not_yet_ingested(source_name, table_name, where=none) -%}
    {%- set glob = landing_source_glob(source_name, table_name) -%}
    {%- if not is_incremental() or not execute -%}
        {{ return('true') }}
    {%- endif -%}
    {%- set settled, changed = _landing_ingested_files(glob, where) -%}
    {%- if not settled and not changed -%}
        {{ return('true') }}
    {%- endif -%}
    (
    {%- if settled %}
        source_file not in ({{ _landing_file_list(settled) }})
    {%- else %}
        true
    {%- endif %}
    {%- if changed %}
        and ingest_key not in (
            select ingest_key from {{ this }}
            where source_file in ({{ _landing_file_list(changed) }}) and ingest_key is not null
        )
    {%- endif %}
    )
{%- endmacro %}

{#- [settled, changed]: names of the landing files matching `glob` that {{ this }} holds rows
    from, unmodified since (settled) or modified since (changed). Only on an incremental run. -#}
{% macro _landing_ingested_files(glob, where=none) -%}
    {%- set query -%}
        with ingested as (
            select source_file, max(ingested_at) as last_ingested_at
            from {{ this }}
            {%- if where %} where {{ where }}{% endif %}
            group by source_file
        ),

        landed as (
            select
                regexp_extract(filename, '[^/]+$') as source_file,
                cast(last_modified as timestamp) as modified_at
            from read_blob({{ _privacy_string_literal(glob) }})
        )

        select
            ingested.source_file,
            landed.modified_at > ingested.last_ingested_at as changed
        from ingested
        inner join landed on ingested.source_file = landed.source_file
        order by ingested.source_file
    {%- endset -%}
    {%- set table = run_query(query) -%}
    {%- set settled, changed = [], [] -%}
    {%- for row in table.rows -%}
        {%- do (changed if row[1] else settled).append(row[0]) -%}
    {%- endfor -%}
    {{ return([settled, changed]) }}
{%- endmacro %}

{% macro _landing_file_list(names) -%}
    {%- for name in names -%}
        {{ _privacy_string_literal(name) }}{% if not loop.last %}, {% endif %}
    {%- endfor -%}
{%- endmacro %}

{#- The file glob a landing source reads: the first string of its external_location. -#}
{% macro landing_source_glob(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set node = graph.sources.get('source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name) -%}
    {%- set found = modules.re.search("'([^']+)'", node.config.external_location or '') -%}
    {%- if not found -%}
        {{ exceptions.raise_compiler_error("source " ~ source_name ~ "." ~ table_name ~ ": external_location names no landing files") }}
    {%- endif -%}
    {{ return(found.group(1)) }}
{%- endmacro %}
