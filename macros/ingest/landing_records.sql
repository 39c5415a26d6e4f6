{#-
  Turns a landing relation into one JSON document per landing row, with a stable identity.
  `doc` holds the row's non-null fields by name, so a column added by schema drift neither
  breaks older files nor changes their hash; JSON lines that do not parse get doc = null and are
  quarantined downstream. ingest_key = file name + record hash + occurrence, so re-reading the
  same files yields the same keys (idempotent bronze) while verbatim duplicate rows in one file
  stay distinct rows (landing rows = bronze rows + quarantined rows).
-#}
{% macro landing_records(relation, format='table') -%}
  {{ return(adapter.dispatch('landing_records', 'privacy_lakehouse')(relation, format)) }}
{%- endmacro %}

{% macro default__landing_records(relation, format) -%}
  {{ exceptions.raise_compiler_error("landing_records is implemented for DuckDB only") }}
{%- endmacro %}

{% macro duckdb__landing_records(relation, format) -%}
    select
        source_file,
        doc,
        raw_record,
        record_hash,
        md5(source_file || '|' || record_hash || '|' || cast(
            row_number() over (partition by source_file, record_hash order by record_hash) as varchar
        )) as ingest_key
    from (
        select
            regexp_extract(landing_row.filename, '[^/]+$') as source_file,
        {%- if format == 'jsonl' %}
            {#- try_cast, not `json_valid(line) and ...`: DuckDB may reorder that conjunction
                when it pushes a filter on doc down, and then json_type fails on a truncated
                line (seen at 1M rows). try_cast makes every branch safe to evaluate. -#}
            case
                when json_type(try_cast(landing_row.line as json)) = 'OBJECT'
                    then cast(json_merge_patch('{}', try_cast(landing_row.line as json)) as varchar)
            end as doc,
            landing_row.line as raw_record,
            md5(landing_row.line) as record_hash
        {%- else %}
            cast(json_merge_patch(
                json_merge_patch('{}', to_json(landing_row)), '{"filename": null}'
            ) as varchar) as doc,
            doc as raw_record,
            md5(doc) as record_hash
        {%- endif %}
        from {{ relation }} as landing_row
    ) as described
{%- endmacro %}
