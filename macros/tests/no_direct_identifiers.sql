{#-
    Fails when a column of the model declares privacy_role direct_identifier with a treatment for
    the model's layer that does not keep the identifier out: by default drop or tokenize in
    silver and gold, and also encrypt / tokenize_and_encrypt in bronze (ciphertext under the
    subject's key, for crypto-shredding). Reads the model's column meta from the graph; returns
    one row per offending column with its name, layer and declared treatment (metadata only).
    allowed_treatments: override the allowed treatment names (a list) for this test.
-#}
{% test no_direct_identifiers(model, allowed_treatments=none) %}
    {{ return(adapter.dispatch('test_no_direct_identifiers', 'privacy_lakehouse')(
        model, allowed_treatments)) }}
{% endtest %}

{% macro default__test_no_direct_identifiers(model, allowed_treatments) %}
    {%- set offending = [] -%}
    {%- if execute -%}
        {%- set node = privacy_lakehouse.privacy_node_for_relation(model) -%}
        {%- if node.resource_type == 'source' -%}
            {%- set layer = 'landing' -%}
        {%- elif node.resource_type == 'snapshot' -%}
            {%- set layer = 'silver' -%}
        {%- else -%}
            {%- set layer = node.fqn[1] if node.fqn | length > 2 else '' -%}
        {%- endif -%}
        {%- set per_layer = {
            'bronze': ['drop', 'tokenize', 'encrypt', 'tokenize_and_encrypt'],
            'silver': ['drop', 'tokenize'],
            'gold': ['drop', 'tokenize'],
        } -%}
        {%- set allowed = allowed_treatments if allowed_treatments is not none
            else per_layer.get(layer, []) -%}
        {%- for column_name, column in (node.columns or {}).items() -%}
            {%- set meta = {} -%}
            {%- do meta.update(column.get('meta') or {}) -%}
            {%- do meta.update((column.get('config') or {}).get('meta') or {}) -%}
            {%- set treatment = (meta.get('treatment') or {}).get(layer) -%}
            {%- if meta.get('privacy_role') == 'direct_identifier' and treatment not in allowed -%}
                {%- do offending.append({
                    'column': column.get('name') or column_name,
                    'treatment': treatment or 'none declared',
                }) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif %}

{% if offending | length == 0 -%}
select
    cast(null as {{ dbt.type_string() }}) as column_name,
    cast(null as {{ dbt.type_string() }}) as layer,
    cast(null as {{ dbt.type_string() }}) as declared_treatment
where 1 = 0
{%- else -%}
{%- for row in offending %}
select
    cast('{{ row.column | replace("'", "''") }}' as {{ dbt.type_string() }}) as column_name,
    cast('{{ layer }}' as {{ dbt.type_string() }}) as layer,
    cast('{{ row.treatment | replace("'", "''") }}' as {{ dbt.type_string() }})
        as declared_treatment
{{ "union all" if not loop.last }}
{%- endfor %}
{%- endif %}
{% endmacro %}
