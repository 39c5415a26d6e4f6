{#-
    mask_keep_first_last(expr, keep_first=0, keep_last=4, mask_char='*'): keep the first
    keep_first and last keep_last characters and replace every other character by mask_char,
    so the length is kept ('4111111111111111' -> '************1111'). A value not longer than
    keep_first + keep_last is masked entirely (keeping it would reveal all of it).
    DuckDB counts grapheme clusters (what a reader sees as one character: an emoji with a
    skin tone, a flag, a letter with a combining accent), never bytes. NULL stays NULL.
-#}
{% macro mask_keep_first_last(expr, keep_first=0, keep_last=4, mask_char='*') -%}
    {{ return(adapter.dispatch('mask_keep_first_last', 'privacy_lakehouse')(
        expr, keep_first, keep_last, mask_char)) }}
{%- endmacro %}

{% macro _privacy_check_keep_first_last(keep_first, keep_last, mask_char) -%}
    {%- do privacy_lakehouse._privacy_require_integer('mask_keep_first_last', 'keep_first', keep_first) -%}
    {%- do privacy_lakehouse._privacy_require_integer('mask_keep_first_last', 'keep_last', keep_last) -%}
    {%- if mask_char is not string or mask_char | length != 1 -%}
        {{ exceptions.raise_compiler_error(
            "mask_keep_first_last: argument 'mask_char' must be a single character") }}
    {%- endif -%}
{%- endmacro %}

{#- Standard SQL plus repeat() (PostgreSQL, Snowflake, Redshift, BigQuery, Spark); counts code points. -#}
{% macro default__mask_keep_first_last(expr, keep_first, keep_last, mask_char) -%}
    {%- do privacy_lakehouse._privacy_check_keep_first_last(keep_first, keep_last, mask_char) -%}
    {%- set value = 'cast(' ~ expr ~ ' as ' ~ (dbt.type_string() | lower) ~ ')' -%}
    {%- set mask = privacy_lakehouse._privacy_string_literal(mask_char) -%}
    case
        when {{ value }} is null then null
        when char_length({{ value }}) <= {{ keep_first + keep_last }}
            then repeat({{ mask }}, char_length({{ value }}))
        else substring({{ value }} from 1 for {{ keep_first }})
            || repeat({{ mask }}, char_length({{ value }}) - {{ keep_first + keep_last }})
            || substring({{ value }} from char_length({{ value }}) - {{ keep_last }} + 1)
    end
{%- endmacro %}

{% macro duckdb__mask_keep_first_last(expr, keep_first, keep_last, mask_char) -%}
    {%- do privacy_lakehouse._privacy_check_keep_first_last(keep_first, keep_last, mask_char) -%}
    {%- set value = 'cast(' ~ expr ~ ' as varchar)' -%}
    {%- set mask = privacy_lakehouse._privacy_string_literal(mask_char) -%}
    case
        when {{ value }} is null then null
        when length_grapheme({{ value }}) <= {{ keep_first + keep_last }}
            then repeat({{ mask }}, length_grapheme({{ value }}))
        else
            {%- if keep_first > 0 %} left_grapheme({{ value }}, {{ keep_first }}) ||{% endif %}
            repeat({{ mask }}, length_grapheme({{ value }}) - {{ keep_first + keep_last }})
            {%- if keep_last > 0 %} || right_grapheme({{ value }}, {{ keep_last }}){% endif %}
    end
{%- endmacro %}
