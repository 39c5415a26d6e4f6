{#- dbt's not_null, reshaped so its result (and a stored failure table) holds one marker per
    failing row and never the row itself: `--store-failures` would otherwise store whole rows. -#}
{% macro default__test_not_null(model, column_name) %}
    select 1 as failing_row
    from {{ model }}
    where {{ column_name }} is null
{% endmacro %}
