{#- Subjects whose consent for `purpose` is granted and current at build time. A revocation
    therefore takes effect at the next build. -#}
{% macro consented_subjects(purpose) -%}
    select subject_token
    from {{ ref('int_consents_historized') }}
    where purpose = '{{ purpose }}'
        and is_current
        and is_granted
{%- endmacro %}
