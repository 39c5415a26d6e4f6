{#-
    ciphertext_of(list_column, exprs, expr): the element of a list made by
    encrypt_values_for_subject(exprs) that holds the ciphertext of `expr` (1-based: a list
    index in SQL). Fails the build when `expr` is not one of `exprs`.
-#}
{% macro ciphertext_of(list_column, exprs, expr) -%}
    {{ return(adapter.dispatch('ciphertext_of', 'privacy_lakehouse')(list_column, exprs, expr)) }}
{%- endmacro %}

{#- List indexing differs between warehouses (1-based in DuckDB). -#}
{% macro default__ciphertext_of(list_column, exprs, expr) -%}
    {{ privacy_lakehouse._privacy_not_portable('ciphertext_of') }}
{%- endmacro %}

{% macro duckdb__ciphertext_of(list_column, exprs, expr) -%}
    {%- do privacy_lakehouse._privacy_require_expression_list('ciphertext_of', exprs) -%}
    {%- if expr not in exprs -%}
        {{ exceptions.raise_compiler_error(
            "ciphertext_of: " ~ (expr | string) ~ " is not one of the encrypted expressions "
            ~ (exprs | join(', '))) }}
    {%- endif -%}
    {{ list_column }}[{{ exprs.index(expr) + 1 }}]
{%- endmacro %}
