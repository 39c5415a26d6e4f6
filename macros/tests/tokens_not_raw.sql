{#-
    Fails when any token in column_name equals a raw input value of raw_column in raw_relation
    (a "token" that is really the input passed through). Returns one row with the number of
    distinct tokens equal to a raw value; never the values.
    raw_relation: ref() or source() of the raw input; raw_column defaults to column_name.
-#}
{% test tokens_not_raw(model, column_name, raw_relation, raw_column=none) %}
    {{ return(adapter.dispatch('test_tokens_not_raw', 'privacy_lakehouse')(
        model, column_name, raw_relation, raw_column)) }}
{% endtest %}

{% macro default__test_tokens_not_raw(model, column_name, raw_relation, raw_column) %}
{%- set raw_name = raw_column if raw_column is not none else column_name %}
with tokens as (
    select distinct cast({{ column_name }} as {{ dbt.type_string() }}) as token
    from {{ model }}
    where {{ column_name }} is not null
),

raw_values as (
    select distinct cast({{ adapter.quote(raw_name) }} as {{ dbt.type_string() }}) as raw_value
    from {{ raw_relation }}
    where {{ adapter.quote(raw_name) }} is not null
),

matches as (
    select count(*) as tokens_equal_to_raw_values
    from tokens
    inner join raw_values on tokens.token = raw_values.raw_value
)

select tokens_equal_to_raw_values
from matches
where tokens_equal_to_raw_values > 0
{% endmacro %}
