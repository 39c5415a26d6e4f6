{#- Columns declared as holding no personal data (privacy_role none, sensitivity public or
    internal). Only these get Delta file statistics or may partition a table: min/max values
    and partition values live in the log and in paths, where no delete reaches them.
    Undeclared columns count as personal (fail closed). -#}
{% macro delta_stats_columns(node=none) -%}
  {%- set node = node or model -%}
  {%- set safe = [] -%}
  {%- for name, column in node.columns.items() -%}
    {%- set meta = (column.config.meta if column.config is defined and column.config.meta else column.meta) or {} -%}
    {%- if meta.get('privacy_role') == 'none' and meta.get('sensitivity') in ['public', 'internal'] -%}
      {%- do safe.append(name) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(safe) }}
{%- endmacro %}
