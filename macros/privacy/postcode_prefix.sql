{#-
    postcode_prefix(expr, prefix_length=2): the first prefix_length characters of the postcode
    after removing all white space, upper-cased: 'sw1a 1aa' -> 'SW'. NULL stays NULL; a
    postcode shorter than prefix_length is kept whole.
-#}
{% macro postcode_prefix(expr, prefix_length=2) -%}
    {{ return(adapter.dispatch('postcode_prefix', 'privacy_lakehouse')(expr, prefix_length)) }}
{%- endmacro %}

{#- Standard SQL removes ordinary spaces only. -#}
{% macro default__postcode_prefix(expr, prefix_length) -%}
    {%- do privacy_lakehouse._privacy_require_integer('postcode_prefix', 'prefix_length', prefix_length, 1) -%}
    upper(substring(replace(cast({{ expr }} as {{ dbt.type_string() | lower }}), ' ', '') from 1 for {{ prefix_length }}))
{%- endmacro %}

{#- Removes every kind of white space, including no-break and other Unicode spaces. -#}
{% macro duckdb__postcode_prefix(expr, prefix_length) -%}
    {%- do privacy_lakehouse._privacy_require_integer('postcode_prefix', 'prefix_length', prefix_length, 1) -%}
    upper(left(regexp_replace(cast({{ expr }} as varchar), '[\s\p{Z}]+', '', 'g'), {{ prefix_length }}))
{%- endmacro %}
