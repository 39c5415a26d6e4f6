{#- The groups of `model` over `quasi_identifiers` whose count of distinct `counted_column`
    values is below `threshold`, each as its group hash and that count (never the values).
    Shared by k_anonymity (distinct subjects) and l_diversity (distinct sensitive values). -#}
{% macro privacy_groups_below(model, quasi_identifiers, counted_column, count_name, threshold) %}
with groups as (
    select
        {% for qi in quasi_identifiers -%}
        {{ adapter.quote(qi) }},
        {% endfor -%}
        count(distinct {{ adapter.quote(counted_column) }}) as {{ count_name }}
    from {{ model }}
    group by
        {% for qi in quasi_identifiers -%}
        {{ adapter.quote(qi) }}{{ "," if not loop.last }}
        {% endfor %}
)

select
    {{ privacy_lakehouse.privacy_group_hash(quasi_identifiers) }} as quasi_identifier_group,
    {{ count_name }}
from groups
where {{ count_name }} < {{ threshold }}
{% endmacro %}
