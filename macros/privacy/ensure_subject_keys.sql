{#-
    ensure_subject_keys(subject_token_expr='subject_token'): an aggregate that creates, in one
    key-store transaction, the data keys of every subject it sees and returns true. A model that
    encrypts for many new subjects joins on it first (`inner join (select ensure_subject_keys(...)
    as keys_ready from ...) on keys_ready`), so encrypt_for_subject finds every key made instead
    of committing new keys chunk by chunk.
-#}
{% macro ensure_subject_keys(subject_token_expr='subject_token') -%}
    {{ return(adapter.dispatch('ensure_subject_keys', 'privacy_lakehouse')(subject_token_expr)) }}
{%- endmacro %}

{% macro default__ensure_subject_keys(subject_token_expr) -%}
    {{ privacy_lakehouse._privacy_not_portable('ensure_subject_keys') }}
{%- endmacro %}

{% macro duckdb__ensure_subject_keys(subject_token_expr) -%}
    {%- if not privacy_lakehouse._privacy_treatments_enabled() -%}
        {#- Still an aggregate (one row): a bare `true` would multiply the joined rows. -#}
        {{ return('bool_or(true)') }}
    {%- endif -%}
    pl_ensure_subject_keys(list(distinct cast({{ subject_token_expr }} as varchar)))
{%- endmacro %}
