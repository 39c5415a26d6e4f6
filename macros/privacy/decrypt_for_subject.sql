{#-
    decrypt_for_subject(ciphertext, purpose, subject_token_expr='subject_token'): the plaintext
    of a ciphertext made by encrypt_for_subject, pl_decrypt(<subject token>, ciphertext,
    '<purpose>'). The plugin allows only the purposes a build needs (see README, Keys) and
    writes an audit entry naming the purpose and the number of subjects before each batch. A
    shredded subject's value is NULL.
-#}
{% macro decrypt_for_subject(ciphertext, purpose, subject_token_expr='subject_token') -%}
    {{ return(adapter.dispatch('decrypt_for_subject', 'privacy_lakehouse')(ciphertext, purpose, subject_token_expr)) }}
{%- endmacro %}

{#- pl_decrypt exists only where the project's plugin registers it (DuckDB). -#}
{% macro default__decrypt_for_subject(ciphertext, purpose, subject_token_expr) -%}
    {{ privacy_lakehouse._privacy_not_portable('decrypt_for_subject') }}
{%- endmacro %}

{% macro duckdb__decrypt_for_subject(ciphertext, purpose, subject_token_expr) -%}
    {%- do privacy_lakehouse._privacy_require_identifier('decrypt_for_subject', 'purpose', purpose) -%}
    {%- if not privacy_lakehouse._privacy_treatments_enabled() -%}
        {#- With the benchmark's privacy-off switch the column holds the value itself. -#}
        {{ return('cast(' ~ ciphertext ~ ' as varchar)') }}
    {%- endif -%}
    pl_decrypt(cast({{ subject_token_expr }} as varchar), cast({{ ciphertext }} as varchar), {{ privacy_lakehouse._privacy_string_literal(purpose) }})
{%- endmacro %}
