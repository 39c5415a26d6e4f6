{#- dbt's accepted_values, returning one row per unexpected value with its count, never the
    value itself. -#}
{% macro default__test_accepted_values(model, column_name, values, quote=True) %}
    select count(*) as n_records
    from {{ model }}
    where {{ column_name }} not in (
        {%- for value in values -%}
            {%- if quote %}'{{ value }}'{% else %}{{ value }}{% endif -%}
            {%- if not loop.last %}, {% endif -%}
        {%- endfor -%}
    )
    group by {{ column_name }}
{% endmacro %}
