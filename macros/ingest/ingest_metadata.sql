{#- Ingestion metadata every bronze row carries: which dbt invocation loaded it, and when. -#}
{% macro ingest_metadata() -%}
    '{{ invocation_id }}' as batch_id,
    cast(now() as timestamp) as ingested_at
{%- endmacro %}
