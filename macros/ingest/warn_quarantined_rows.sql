{#- Post-hook of the quarantine: a warning per source table and reason for the rows this build
    quarantined because their landing file is malformed (a row with more or fewer fields than
    its header, a value in a column the source does not declare: a misspelled or header-less
    file, or a JSON boolean, array or object where a field's text belongs). Counts and names of
    files only: never a value, nor an undeclared column's name (a header-less file's "names"
    are its first row). -#}
{% macro warn_quarantined_rows(reasons=['ragged_row', 'undeclared_column', 'wrong_type']) -%}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set query -%}
        select source_name, reject_reason, count(*) as n_rows, string_agg(distinct source_file, ', ' order by source_file) as files
        from {{ this }}
        where batch_id = '{{ invocation_id }}'
            and reject_reason in ({% for reason in reasons %}'{{ reason }}'{% if not loop.last %}, {% endif %}{% endfor %})
        group by all
        order by all
    {%- endset -%}
    {%- for row in run_query(query).rows -%}
        {%- do exceptions.warn(
            "landing source " ~ row[0] ~ ": " ~ row[2] ~ " row(s) quarantined as " ~ row[1]
            ~ " (files: " ~ row[3] ~ "); fix the delivery and see bronze.raw_quarantine__records"
        ) -%}
    {%- endfor -%}
{%- endmacro %}
