{#-
    Distinct l-diversity: every quasi-identifier combination must hold at least l distinct
    values of the sensitive attribute. Fails with one row per group below l: a keyed token of the
    combination and the number of distinct sensitive values, never the values themselves.
-#}
{% test l_diversity(model, quasi_identifiers=none, sensitive_column=none, l=none) %}
    {{ return(adapter.dispatch('test_l_diversity', 'privacy_lakehouse')(
        model, quasi_identifiers, sensitive_column, l)) }}
{% endtest %}

{% macro default__test_l_diversity(model, quasi_identifiers, sensitive_column, l) %}
    {%- set qis = quasi_identifiers
        if quasi_identifiers is not none
        else privacy_lakehouse.privacy_columns_with_role(model, 'quasi_identifier') -%}
    {%- if execute and qis | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "l_diversity on " ~ model ~ ": no quasi-identifiers given or declared in meta") }}
    {%- endif -%}
    {%- if sensitive_column is none -%}
        {{ exceptions.raise_compiler_error("l_diversity on " ~ model ~ ": sensitive_column is required") }}
    {%- endif -%}
    {%- if l is none or (l | int) < 1 -%}
        {{ exceptions.raise_compiler_error("l_diversity on " ~ model ~ ": l must be at least 1") }}
    {%- endif %}

{{ privacy_lakehouse.privacy_groups_below(model, qis, sensitive_column, 'distinct_sensitive_values', l | int) }}
{% endmacro %}
