{#-
    An md5 over a group's quasi-identifier values, so a failing group can be found again by
    someone holding the data without the values being written into a test's stored failures.
    NULL is kept distinct from the empty string, and a separator keeps ('ab','c') apart from
    ('a','bc').
-#}
{% macro privacy_group_hash(columns) %}
    {{ return(adapter.dispatch('privacy_group_hash', 'privacy_lakehouse')(columns)) }}
{% endmacro %}

{% macro default__privacy_group_hash(columns) -%}
    md5(
        {%- for column in columns %}
        coalesce('v:' || cast({{ adapter.quote(column) }} as {{ dbt.type_string() }}), 'null')
        {{- " || '|' ||" if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}
