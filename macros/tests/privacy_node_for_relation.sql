{#-
    The graph node (model, snapshot, seed or source) a test's relation was built from, matched by
    database, schema and identifier. Raises when there is none: a privacy test that cannot see
    its model's meta must not pass by default.
-#}
{% macro privacy_node_for_relation(relation) %}
    {{ return(adapter.dispatch('privacy_node_for_relation', 'privacy_lakehouse')(relation)) }}
{% endmacro %}

{% macro default__privacy_node_for_relation(relation) %}
    {%- if not execute -%}
        {{ return({}) }}
    {%- endif -%}
    {%- if relation.identifier is not defined or relation.identifier is none -%}
        {{ exceptions.raise_compiler_error(
            "privacy test: cannot match " ~ relation ~ " to a node (a `where` config turns the "
            ~ "relation into a subquery; drop it for privacy tests)") }}
    {%- endif -%}
    {%- set candidates = graph.nodes.values() | list + graph.sources.values() | list -%}
    {%- for node in candidates
        if node.resource_type in ['model', 'snapshot', 'seed', 'source']
        and (node.get('identifier') or node.get('alias') or node.name) | lower
            == relation.identifier | lower
        and (node.schema or '') | lower == (relation.schema or '') | lower
        and (node.database or '') | lower == (relation.database or '') | lower -%}
        {{ return(node) }}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error(
        "privacy test: no model, snapshot, seed or source in the graph builds " ~ relation) }}
{% endmacro %}
