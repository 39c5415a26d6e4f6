{#- A SQL string literal. Only for paths and names, never for data or secrets. -#}
{% macro delta_sql_string(value) -%}
  {{- "'" ~ (value | string | replace("'", "''")) ~ "'" -}}
{%- endmacro %}
