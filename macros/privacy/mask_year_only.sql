{#-
    mask_year_only(expr): a date (or timestamp, or ISO date text) reduced to its year, as an
    integer. NULL stays NULL. A timestamp with time zone is read in the session time zone.
-#}
{% macro mask_year_only(expr) -%}
    {{ return(adapter.dispatch('mask_year_only', 'privacy_lakehouse')(expr)) }}
{%- endmacro %}

{% macro default__mask_year_only(expr) -%}
    cast(extract(year from cast({{ expr }} as date)) as integer)
{%- endmacro %}

{% macro duckdb__mask_year_only(expr) -%}
    cast(year(cast({{ expr }} as date)) as integer)
{%- endmacro %}
