{#-
    mask_nullify(expr): replace every value by NULL.
    The NULL keeps the type of expr (a CASE with no matching branch), so contracts and Delta
    schemas see the column's own type, not DuckDB's untyped NULL.
-#}
{% macro mask_nullify(expr) -%}
    {{ return(adapter.dispatch('mask_nullify', 'privacy_lakehouse')(expr)) }}
{%- endmacro %}

{% macro default__mask_nullify(expr) -%}
    case when 1 = 0 then {{ expr }} end
{%- endmacro %}

{% macro duckdb__mask_nullify(expr) -%}
    case when false then {{ expr }} end
{%- endmacro %}
