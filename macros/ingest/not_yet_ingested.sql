{#-
  Idempotent bronze, file by file. On a full build every landing row passes. On an incremental
  run a landing file is skipped without being opened (its name is listed as a constant, which
  DuckDB turns into a file filter) when the ingestion ledger (control.ingestion_ledger, written
  after each build: privacy_lakehouse.ingestion_ledger) holds it for this table with the size
  and modification time it has now. So a file whose rows retention deleted is not read again.
  Any other size or time, older or newer, is a re-delivery: the file is read again and only its
  rows whose ingest key the table lacks pass. A file the ledger lacks (a lake built before it)
  is skipped when the table holds rows of it ingested after its modification time, as before
  the ledger. An incremental run reads the new and changed files only. `where` narrows the
  table's rows (the quarantine holds several sources).
-#}
{% macro not_yet_ingested(source_name, table_name, where=none) -%}
    {#- Named before the early return, so that parsing records the dependencies. -#}
    {%- do landing_source_glob(source_name, table_name) -%}
    {%- do source('control', 'ingestion_ledger') -%}
    {%- if not is_incremental() or not execute -%}
        {{ return('true') }}
    {%- endif -%}
    {%- set settled, changed = _landing_ingested_files(source_name, table_name, where) -%}
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

{#- [settled, changed]: names of the landing source's files that {{ this }} took (by the ledger,
    else by its rows), unmodified since (settled) or modified since (changed). Only on an
    incremental run. -#}
{% macro _landing_ingested_files(source_name, table_name, where=none) -%}
    {%- set glob = landing_source_glob(source_name, table_name) -%}
    {%- set ledger_relation = source('control', 'ingestion_ledger') -%}
    {%- set query -%}
        with ledger as (
            select source_file, file_size, file_modified_at
            from {{ ledger_relation }}
            where
                event = 'ingested'
                and table_name = {{ _privacy_string_literal(model.config.get('location') or (model.fqn[1] ~ '/' ~ model.name)) }}
                and source_name = {{ _privacy_string_literal(source_name ~ '.' ~ table_name) }}
            qualify row_number() over (partition by source_file order by recorded_at desc) = 1
        ),

        ingested as (
            select source_file, max(ingested_at) as last_ingested_at
            from {{ this }}
            {%- if where %} where {{ where }}{% endif %}
            group by source_file
        ),

        landed as (
            select
                regexp_extract(filename, '[^/]+$') as source_file,
                size,
                last_modified
            from read_blob({{ _privacy_string_literal(glob) }})
        )

        select
            landed.source_file,
            case
                when ledger.source_file is not null
                    then (landed.size, landed.last_modified) is distinct from (ledger.file_size, ledger.file_modified_at)
                else cast(landed.last_modified as timestamp) > ingested.last_ingested_at
            end as changed
        from landed
        left join ledger on landed.source_file = ledger.source_file
        left join ingested on landed.source_file = ingested.source_file
        where ledger.source_file is not null or ingested.source_file is not null
        order by landed.source_file
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
