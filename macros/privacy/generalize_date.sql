{#-
    generalize_date(expr, grain): a date or timestamp truncated to the start of its grain
    (decade, year, quarter, month, week, day, hour or minute): 2024-05-17 with 'month' ->
    2024-05-01. In DuckDB a date stays a date and a timestamp stays a timestamp. NULL stays NULL.
-#}
{% macro generalize_date(expr, grain) -%}
    {{ return(adapter.dispatch('generalize_date', 'privacy_lakehouse')(expr, grain)) }}
{%- endmacro %}

{% macro _privacy_check_grain(grain) -%}
    {%- set grains = ['decade', 'year', 'quarter', 'month', 'week', 'day', 'hour', 'minute'] -%}
    {%- if grain not in grains -%}
        {{ exceptions.raise_compiler_error(
            "generalize_date: argument 'grain' must be one of " ~ (grains | join(', '))
            ~ ", got " ~ (grain | string)) }}
    {%- endif -%}
{%- endmacro %}

{#- date_trunc('<grain>', x) as spelled by PostgreSQL, Snowflake, Redshift and Databricks. -#}
{% macro default__generalize_date(expr, grain) -%}
    {%- do privacy_lakehouse._privacy_check_grain(grain) -%}
    date_trunc('{{ grain }}', {{ expr }})
{%- endmacro %}

{% macro duckdb__generalize_date(expr, grain) -%}
    {%- do privacy_lakehouse._privacy_check_grain(grain) -%}
    date_trunc('{{ grain }}', {{ expr }})
{%- endmacro %}
