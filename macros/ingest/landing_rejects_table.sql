{#- The temporary table of a CSV source's skipped rows that stage_landing_rejects fills (the
    quarantine's pre-hook) and release_landing_rejects drops. -#}
{% macro landing_rejects_table(source_name, table_name) -%}
    {{ return('pl_landing_rejects__' ~ source_name ~ '__' ~ table_name) }}
{%- endmacro %}
