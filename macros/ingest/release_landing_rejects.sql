{#- Post-hook of the quarantine: drops the temporary table of a CSV source's skipped rows that
    stage_landing_rejects filled, so their plaintext leaves memory once quarantined. -#}
{% macro release_landing_rejects(source_name, table_name) -%}
    drop table if exists {{ landing_rejects_table(source_name, table_name) }}
{%- endmacro %}
