{#- dbt's relationships, returning one marker per orphaned row, never the key. -#}
{% macro default__test_relationships(model, column_name, to, field) %}
    select 1 as orphan_row
    from {{ model }} as child
    left join {{ to }} as parent
        on child.{{ column_name }} = parent.{{ field }}
    where child.{{ column_name }} is not null
        and parent.{{ field }} is null
{% endmacro %}
