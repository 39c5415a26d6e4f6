{#- Absolute path of a model's Delta table: <lake>/<layer>/<model name>, or config `location`
    (relative to the lake). The plugin resolves it so BI tools get a path that works anywhere. -#}
{% macro delta_location(node=none) -%}
  {%- set node = node or model -%}
  {%- set relative = node.config.get('location') or (node.fqn[1] ~ '/' ~ node.name) -%}
  {%- if not execute -%}
    {{ return(relative) }}
  {%- endif -%}
  {{ return(run_query("select pl_lake_path(" ~ delta_sql_string(relative) ~ ")").columns[0].values()[0]) }}
{%- endmacro %}
