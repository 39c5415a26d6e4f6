{#-
  A field of a JSON lines landing row (landing_records' doc) as text, or NULL when the line
  holds a JSON boolean, array or object there: json_transform gives such a value's JSON text
  ('true', '["C1", "C2"]'), which must never pass for a customer number. The line is parsed
  again only for a value that looks structured (true, false, [..., {...), so the hot path
  costs a few string comparisons a field: transforming every field to JSON and reading its
  type cost 4-6x the parse at 10M rows. Expects `doc` and `raw_record` (the line).
-#}
{% macro landing_json_field(field) -%}
    case when {{ _landing_json_structured(field) }} then null else doc.{{ adapter.quote(field) }} end
{%- endmacro %}

{#- Whether the line holds a JSON boolean, array or object in `field` (never NULL). -#}
{% macro _landing_json_structured(field) -%}
    {%- set value = 'doc.' ~ adapter.quote(field) -%}
    {#- A CASE, so that only the few rows whose text looks structured parse the line again. -#}
    case
        when coalesce({{ value }} in ('true', 'false') or starts_with({{ value }}, '[') or starts_with({{ value }}, '{'), false)
            then coalesce(json_type(raw_record, {{ _privacy_string_literal('$."' ~ field ~ '"') }}) in ('BOOLEAN', 'ARRAY', 'OBJECT'), false)
        else false
    end
{%- endmacro %}
