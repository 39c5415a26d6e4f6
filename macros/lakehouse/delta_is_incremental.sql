{#-
  is_incremental() is always false for a custom materialization, so the delta materialization
  decides for itself: incremental only when a strategy is configured, this is not a full
  refresh, and the Delta table really exists. The view over it is (re)created here so that an
  incremental filter never reads a missing or stale relation.
-#}
{% macro delta_is_incremental() -%}
  {%- if not execute or model.config.materialized != 'delta' -%}
    {{ return(false) }}
  {%- endif -%}
  {%- if config.get('incremental_strategy') is none or should_full_refresh() -%}
    {{ return(false) }}
  {%- endif -%}
  {%- set location = delta_location() -%}
  {%- set version = run_query("select pl_delta_version(" ~ delta_sql_string(location) ~ ")").columns[0].values()[0] -%}
  {%- if version is none -%}
    {{ return(false) }}
  {%- endif -%}
  {% call statement('refresh_view_for_incremental') -%}
    create or replace view {{ this.incorporate(type='view') }} as select * from delta_scan({{ delta_sql_string(location) }})
  {%- endcall %}
  {{ return(true) }}
{%- endmacro %}
