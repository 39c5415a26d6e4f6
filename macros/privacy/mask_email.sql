{#-
    mask_email(expr): 'john.doe@example.com' -> 'j***@example.com' (first character of the
    local part, '***', '@', the domain after the last '@'). NULL stays NULL, '' stays '', and a
    value without '@' becomes '*****' (fully masked, its length hidden).
-#}
{% macro mask_email(expr) -%}
    {{ return(adapter.dispatch('mask_email', 'privacy_lakehouse')(expr)) }}
{%- endmacro %}

{#- Standard SQL; splits at the first '@' (standard SQL has no search from the end). -#}
{% macro default__mask_email(expr) -%}
    {%- set value = 'cast(' ~ expr ~ ' as ' ~ (dbt.type_string() | lower) ~ ')' -%}
    case
        when {{ value }} is null then null
        when {{ value }} = '' then ''
        when position('@' in {{ value }}) = 0 then '*****'
        else substring({{ value }} from 1 for least(1, position('@' in {{ value }}) - 1))
            || '***'
            || substring({{ value }} from position('@' in {{ value }}))
    end
{%- endmacro %}

{% macro duckdb__mask_email(expr) -%}
    {%- set value = 'cast(' ~ expr ~ ' as varchar)' -%}
    case
        when {{ value }} is null then null
        when {{ value }} = '' then ''
        when strpos({{ value }}, '@') = 0 then '*****'
        else left({{ value }}, least(1, strpos({{ value }}, '@') - 1))
            || '***@'
            || regexp_extract({{ value }}, '@([^@]*)$', 1)
    end
{%- endmacro %}
