{#- dbt's unique, returning how often each duplicated value occurs but never the value. -#}
{% macro default__test_unique(model, column_name) %}
    select count(*) as n_records
    from {{ model }}
    where {{ column_name }} is not null
    group by {{ column_name }}
    having count(*) > 1
{% endmacro %}
