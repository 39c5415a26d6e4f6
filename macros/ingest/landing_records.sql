{#-
  The rows of one landing table with a stable identity, read straight from its files.

  landing_records(source_name, table_name, format='table'|'jsonl', fields=[...]) selects the source's columns
  declared in its YAML (a declared column missing from every file reads as NULL), plus:
  - source_file: the landing file's name;
  - record_hash: a keyed token (HMAC under the never-rotated 'record' salt) of the MD5 of the
    row's content. For tables, the non-null declared fields as name=value in name order, so a
    column added by schema drift neither breaks older files nor changes their hash; for JSON
    lines, the line as delivered;
  - ingest_key: MD5 of file name + record hash. Landing files are immutable, so re-reading a
    file yields the same keys; a line repeated verbatim in one file is kept twice and shares
    its key (landing rows = bronze rows + quarantined rows);
  - raw_record: the row as delivered, for the quarantine only: the line (JSON lines) or the row
    as a STRUCT (tables), which landing_record_text turns into text once the rejects are
    filtered, so valid rows never pay for a JSON document;
  - has_undeclared_column (tables only): whether the row has a value in a column the YAML does
    not declare (the base models quarantine it as undeclared_column);
  - doc (JSON lines only): the line parsed once into a STRUCT of the VARCHAR `fields` (a field
    the line lacks is NULL), or NULL when the line is not a JSON object;
  - doc_wrong_type (JSON lines only): true when a field holds a JSON boolean, array or object,
    which no field of a landing contract is (a string or a number is); doc holds such a field's
    JSON text, which landing_json_field reads as NULL.
  No window over the rows and no JSON round trip for tables: this is the hot path of every build.
-#}
{% macro landing_records(source_name, table_name, format='table', fields=[]) -%}
  {{ return(adapter.dispatch('landing_records', 'privacy_lakehouse')(source_name, table_name, format, fields)) }}
{%- endmacro %}

{% macro default__landing_records(source_name, table_name, format, fields) -%}
  {{ exceptions.raise_compiler_error("landing_records is implemented for DuckDB only") }}
{%- endmacro %}

{% macro duckdb__landing_records(source_name, table_name, format, fields) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- set columns = privacy_lakehouse.landing_declared_columns(source_name, table_name) -%}
    {%- set literals = [] -%}
    {%- for column in columns + ['filename'] -%}
        {%- do literals.append(privacy_lakehouse._privacy_string_literal(column) | trim) -%}
    {%- endfor -%}
    {%- set declared = literals | join(', ') -%}
    {%- set undeclared = 'coalesce(length(coalesce(*columns(lambda c: c not in (' ~ declared ~ ')))) >= 0, false)' -%}
    {%- set structure = {} -%}
    {%- for field in fields -%}
        {%- do structure.update({field: 'VARCHAR'}) -%}
    {%- endfor -%}
    {%- if format == 'jsonl' and not fields -%}
        {{ exceptions.raise_compiler_error("landing_records: JSON lines source " ~ source_name ~ "." ~ table_name ~ " needs the fields to parse") }}
    {%- endif -%}
    select
        *,
        {%- if format == 'jsonl' %}
        (
        {%- for field in fields %}
            {{ privacy_lakehouse._landing_json_structured(field) }}{% if not loop.last %} or{% endif %}
        {%- endfor %}
        ) as doc_wrong_type,
        {%- endif %}
        {{ privacy_lakehouse.landing_ingest_key('source_file', 'record_hash') }} as ingest_key
    from (
        select
            regexp_extract(landing_row.filename, '[^/]+$') as source_file,
        {%- if format == 'jsonl' %}
            {#- try_cast, not `json_valid(line) and ...`: DuckDB may reorder that conjunction
                when it pushes a filter on doc down, and then json_type fails on a truncated
                line (seen at 1M rows). try_cast makes every branch safe to evaluate.
                unnest([...]) is an optimization barrier: without it DuckDB copies the parse
                into every pushed-down filter that reads a field, parsing each line about
                eight times (2x slower at 10M rows). -#}
            unnest([case
                when json_type(try_cast(landing_row.line as json)) = 'OBJECT'
                    then json_transform(try_cast(landing_row.line as json), {{ privacy_lakehouse._privacy_string_literal(tojson(structure)) }})
            end]) as doc,
            landing_row.line as raw_record,
            {{ privacy_lakehouse.landing_record_hash(source_name, table_name, 'landing_row.line', format) }} as record_hash
        from {{ relation }} as landing_row
        {%- else %}
            {{ privacy_lakehouse.landing_record_hash(source_name, table_name, 'landing_row', whole_row_when=undeclared) }} as record_hash,
            landing_row as raw_record,
            {#- A value in a column the YAML does not declare (a misspelled header, or a
                header-less file whose first row became the header) would be dropped unseen:
                the row is flagged for the quarantine instead. The columns are picked by a
                lambda over their names, so no undeclared name (data, for a header-less file)
                is written into SQL; functions only: DuckDB refuses operators on *COLUMNS. -#}
            {{ undeclared }} as has_undeclared_column,
            {%- for column in columns %}
            landing_row.{{ adapter.quote(column) }}{% if not loop.last %},{% endif %}
            {%- endfor %}
        from (
            select
                columns(lambda c: c in ({{ declared }})),
                columns(lambda c: c not in ({{ declared }}))::varchar
            from (
                select * from {{ privacy_lakehouse.landing_readable_relation(source_name, table_name) }}
                {#- Declared columns no file has yet (schema drift to come) read as NULL; the
                    last column is undeclared and always NULL, so that the lambda above never
                    selects no column (DuckDB refuses that). #}
                union all by name
                select
                {%- for column in columns %}
                    cast(null as varchar) as {{ adapter.quote(column) }},
                {%- endfor %}
                    cast(null as varchar) as pl_no_undeclared_column
                where false
            ) as delivered
        ) as landing_row
        {%- endif %}
    ) as described
{%- endmacro %}

{#- The column names a source table declares in its YAML (its landing contract). -#}
{% macro landing_declared_columns(source_name, table_name) -%}
    {%- if not execute -%}
        {{ return(['pl_parse_placeholder']) }}
    {%- endif -%}
    {%- set node = graph.sources.get('source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name) -%}
    {%- if node is none or not node.columns -%}
        {{ exceptions.raise_compiler_error("landing_records: source " ~ source_name ~ "." ~ table_name ~ " declares no columns; its YAML is the landing contract") }}
    {%- endif -%}
    {{ return(node.columns.keys() | list) }}
{%- endmacro %}

{#- The text the quarantine keeps of a landing row: the line as delivered (JSON lines), or the
    JSON of the row's non-null fields (tables). -#}
{% macro landing_record_text(raw_record, format='table') -%}
    {%- if format == 'jsonl' -%}
        {{ raw_record }}
    {%- else -%}
        cast(json_merge_patch(json_merge_patch('{}', to_json({{ raw_record }})), '{"filename": null}') as varchar)
    {%- endif -%}
{%- endmacro %}

{#- A landing row's record hash: the 'record' token of the MD5 of the line (JSON lines), or of the
    non-null declared fields of the row as name=value in name order (tables). `row` is the line, or the row's alias or
    STRUCT. The quarantine hashes its rejected rows itself, after filtering, with this macro. -#}
{% macro landing_record_hash(source_name, table_name, row, format='table', whole_row_when=none) -%}
    {%- if format == 'jsonl' -%}
        {#- coalesce: an empty line reads as NULL; it is still a landing row with a key -#}
        {%- set digest = "md5(coalesce(" ~ row ~ ", ''))" -%}
    {%- else -%}
        {%- set fields = [] -%}
        {%- for column in landing_declared_columns(source_name, table_name) | sort -%}
            {%- do fields.append("'" ~ column ~ "=' || " ~ row ~ "." ~ adapter.quote(column)) -%}
        {%- endfor -%}
        {%- set digest = "md5(concat_ws(chr(31), " ~ fields | join(", ") ~ "))" -%}
        {#- A row with values in undeclared columns (whole_row_when: a condition on `row`) is
            hashed over every non-null field, named or not: the rows of a header-less file have
            no declared field at all, and would otherwise share one hash, so that erasing one
            of them by its record would take the others too. -#}
        {%- if whole_row_when -%}
            {%- set digest = "case when " ~ whole_row_when ~ " then md5('*' || " ~ landing_row_text(row) ~ ") else " ~ digest ~ " end" -%}
        {%- endif -%}
    {%- endif -%}
    {#- Keyed: bronze keeps most of a row's fields in clear beside this hash, so a plain md5
        would give the row's identifiers back to anyone who hashes the few candidates (customer
        numbers are short). The 'record' salt is never rotated: ingest keys and tombstones of
        records rest on it. -#}
    {{ salted_hash(digest, 'record') }}
{%- endmacro %}

{#- Every non-null field of a table row (a STRUCT) as name=value, in name order, the file name
    left out: the same text whatever the order of the columns the files were read in. The
    fields' names are read from the row, never written into SQL. No NOT or IS NULL: DuckDB
    refuses them in an expression that unpacks *COLUMNS. Mirrored by the landing purge
    (privacy_lakehouse.landing.LandingSource.record_hash). -#}
{% macro landing_row_text(row) -%}
    array_to_string(list_transform(list_filter(list_sort(map_entries(json_transform(
        json_merge_patch(to_json({{ row }}), '{"filename": null}'), '"MAP(VARCHAR, VARCHAR)"'
    ))), entry -> length(entry.value) >= 0), entry -> entry.key || '=' || entry.value), chr(31))
{%- endmacro %}

{#- The identity of a landing row in bronze: file name + record hash. -#}
{% macro landing_ingest_key(source_file, record_hash) -%}
    md5({{ source_file }} || '|' || {{ record_hash }})
{%- endmacro %}
