{#-
    top_bottom_code(expr, lower=none, upper=none): clip extremes to thresholds: values below
    lower become lower, values above upper become upper (give at least one). NULL stays NULL.
-#}
{% macro top_bottom_code(expr, lower=none, upper=none) -%}
    {{ return(adapter.dispatch('top_bottom_code', 'privacy_lakehouse')(expr, lower, upper)) }}
{%- endmacro %}

{% macro default__top_bottom_code(expr, lower, upper) -%}
    {%- if lower is none and upper is none -%}
        {{ exceptions.raise_compiler_error(
            "top_bottom_code: give at least one of the arguments 'lower' and 'upper'") }}
    {%- endif -%}
    {{ privacy_lakehouse._privacy_clipped('top_bottom_code', expr, lower, upper) }}
{%- endmacro %}

{% macro duckdb__top_bottom_code(expr, lower, upper) -%}
    {{ return(privacy_lakehouse.default__top_bottom_code(expr, lower, upper)) }}
{%- endmacro %}
