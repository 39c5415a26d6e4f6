{#-
    A keyed label for a group of quasi-identifier values, so a failing group can be found again
    (recompute the label over the data through the project's plugin) without the values being
    written into a test's stored failures. Keyed, not a plain md5: generalized values come from
    small vocabularies, and an md5 of them is reversed by hashing every combination. NULL is
    kept distinct from the empty string, and a separator keeps ('ab','c') apart from ('a','bc').
-#}
{% macro privacy_group_hash(columns) %}
    {{ return(adapter.dispatch('privacy_group_hash', 'privacy_lakehouse')(columns)) }}
{% endmacro %}

{#- The group's values as one text: 'v:'-prefixed values ('null' for NULL) joined by '|'. -#}
{% macro privacy_group_text(columns) -%}
    {%- for column in columns %}
    coalesce('v:' || cast({{ adapter.quote(column) }} as {{ dbt.type_string() }}), 'null')
    {{- " || '|' ||" if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- pl_token (HMAC under the never-shown 'test_group' salt) exists only where the project's
    plugin registers it. -#}
{% macro default__privacy_group_hash(columns) -%}
    {{ exceptions.raise_compiler_error(
        "privacy_group_hash needs the project's pl_token; no implementation for adapter "
        ~ adapter.type()) }}
{%- endmacro %}

{% macro duckdb__privacy_group_hash(columns) -%}
    pl_token({{ privacy_lakehouse.privacy_group_text(columns) }}, 'test_group')
{%- endmacro %}
