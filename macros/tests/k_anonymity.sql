{#-
    k-anonymity over quasi-identifiers, counting people (distinct subjects), not rows.
    Fails with one row per quasi-identifier combination shared by fewer than k subjects. The
    row holds a keyed token of the combination (privacy_group_hash) and the subject count, never
    the values themselves, so stored failures (--store-failures) hold no personal data.
    quasi_identifiers: list of column names; omitted, the model's columns whose meta declares
    privacy_role quasi_identifier (read from the graph).
-#}
{% test k_anonymity(model, quasi_identifiers=none, k=none, subject_column='subject_token') %}
    {{ return(adapter.dispatch('test_k_anonymity', 'privacy_lakehouse')(
        model, quasi_identifiers, k, subject_column)) }}
{% endtest %}

{% macro default__test_k_anonymity(model, quasi_identifiers, k, subject_column) %}
    {%- set qis = quasi_identifiers
        if quasi_identifiers is not none
        else privacy_lakehouse.privacy_columns_with_role(model, 'quasi_identifier') -%}
    {%- if execute and qis | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "k_anonymity on " ~ model ~ ": no quasi-identifiers given or declared in meta") }}
    {%- endif -%}
    {%- if k is none or (k | int) < 1 -%}
        {{ exceptions.raise_compiler_error("k_anonymity on " ~ model ~ ": k must be at least 1") }}
    {%- endif %}

{{ privacy_lakehouse.privacy_groups_below(model, qis, subject_column, 'subject_count', k | int) }}
{% endmacro %}
