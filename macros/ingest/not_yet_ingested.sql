{#- Idempotent bronze: on an incremental run, only landing rows whose ingest key the table does
    not hold yet; on a full build, every row. -#}
{% macro not_yet_ingested(key='ingest_key') -%}
    {%- if is_incremental() -%}
        {{ key }} not in (select {{ key }} from {{ this }})
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
