{#- True under `dbt run/build --empty`: the plugin must then never replace a real table. -#}
{% macro delta_is_empty_run() -%}
  {{ return(flags.EMPTY is true or (invocation_args_dict.get('empty') is true)) }}
{%- endmacro %}
