{#-
    Scans text for personal-data patterns: emails, phone numbers, card numbers (13-19 digits
    that pass the Luhn check), IBANs (that pass the ISO 13616 mod-97 check) and 9-digit national
    ids (123-45-6789 or 123456789). Fails with one row per (column, pattern) that matches:
    the column name, the pattern name and the number of matching rows; never the values.
    columns: the columns to scan (cast to text); omitted, every text column of the relation.
    Declared under a column (column_name), it scans that column.
    patterns: a subset of ['email', 'phone', 'card_number', 'iban', 'national_id'].
-#}
{% test no_pii_patterns(model, column_name=none, columns=none, patterns=none) %}
    {%- set scanned = columns if columns is not none
        else ([column_name] if column_name is not none else none) -%}
    {{ return(adapter.dispatch('test_no_pii_patterns', 'privacy_lakehouse')(
        model, scanned, patterns)) }}
{% endtest %}

{% macro default__test_no_pii_patterns(model, columns, patterns) %}
    {#- The checksums need list functions and lambdas; a silent regex-only fallback would
        under-report, so other adapters fail loudly until they get an implementation. -#}
    {{ exceptions.raise_compiler_error(
        "no_pii_patterns has no implementation for adapter " ~ adapter.type()) }}
{% endmacro %}

{% macro duckdb__test_no_pii_patterns(model, columns, patterns) %}
    {%- set all_patterns = ['email', 'phone', 'card_number', 'iban', 'national_id'] -%}
    {%- set chosen = patterns if patterns is not none else all_patterns -%}
    {%- for name in chosen if name not in all_patterns -%}
        {{ exceptions.raise_compiler_error(
            "no_pii_patterns: unknown pattern " ~ name ~ "; use " ~ all_patterns | join(", ")) }}
    {%- endfor -%}

    {%- set scanned = [] -%}
    {%- if columns is not none -%}
        {%- for name in columns -%}{%- do scanned.append(name) -%}{%- endfor -%}
    {%- elif execute -%}
        {%- for column in adapter.get_columns_in_relation(model) if column.is_string() -%}
            {%- do scanned.append(column.name) -%}
        {%- endfor -%}
    {%- endif -%}

    {#- Regexes as template text (not Jinja string literals) so backslashes reach SQL as is. -#}
    {%- set email_regex -%}
        [A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}
    {%- endset -%}
    {%- set phone_regex -%}
        (?:^|[^0-9A-Za-z-])(?:(?:\+|00)[1-9][0-9]{0,2}[ .-]?(?:\(0\)[ .-]?)?(?:\(?[0-9]{1,4}\)?[ .-]?){1,4}[0-9]{2,4}|\(?0[0-9]{1,4}\)?[ .\-/][0-9]{3,4}[ .-]?[0-9]{3,4}|0[0-9]{9,10}|\(?[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4})(?:$|[^0-9A-Za-z])
    {%- endset -%}
    {%- set card_regex -%}
        \b(?:[0-9][ -]?){12,18}[0-9]\b
    {%- endset -%}
    {%- set iban_regex -%}
        \b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b
    {%- endset -%}
    {%- set national_id_regex -%}
        (?:^|[^0-9])(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{9})(?:$|[^0-9])
    {%- endset -%}

    {#- Luhn over a candidate x: from the right, double every second digit (minus 9 above 9). -#}
    {%- set luhn_valid -%}
        list_sum(list_transform(
            string_split(reverse(regexp_replace(x, '[^0-9]', '', 'g')), ''),
            (digit, position) -> case
                when position % 2 = 0 then cast(digit as integer) * 2
                    - case when cast(digit as integer) * 2 > 9 then 9 else 0 end
                else cast(digit as integer)
            end
        )) % 10 = 0
    {%- endset -%}
    {#- IBAN mod-97 over x: move the first four characters to the end, letters to 10..35, then
        reduce digit by digit so the number never outgrows an integer. -#}
    {%- set iban_valid -%}
        list_reduce(
            list_transform(
                string_split(array_to_string(list_transform(
                    string_split(substr(replace(x, ' ', ''), 5) || substr(replace(x, ' ', ''), 1, 4), ''),
                    character -> case
                        when character between 'A' and 'Z' then cast(ascii(character) - 55 as varchar)
                        else character
                    end
                ), ''), ''),
                digit -> cast(digit as integer)
            ),
            (remainder, digit) -> (remainder * 10 + digit) % 97
        ) = 1
    {%- endset -%}

    {%- set matchers = {
        'email': "regexp_matches(__scanned_value__, '" ~ email_regex ~ "')",
        'phone': "regexp_matches(__scanned_value__, '" ~ phone_regex ~ "')",
        'card_number': "len(list_filter(regexp_extract_all(__scanned_value__, '" ~ card_regex
            ~ "'), x -> " ~ luhn_valid ~ ")) > 0",
        'iban': "len(list_filter(regexp_extract_all(__scanned_value__, '" ~ iban_regex
            ~ "'), x -> " ~ iban_valid ~ ")) > 0",
        'national_id': "regexp_matches(__scanned_value__, '" ~ national_id_regex ~ "')",
    } %}

{% if scanned | length == 0 or chosen | length == 0 -%}
select
    cast(null as varchar) as column_name,
    cast(null as varchar) as pii_pattern,
    cast(null as bigint) as matching_rows
where 1 = 0
{%- else -%}
with scanned as (
    select
        {%- for column in scanned %}
        {%- set outer = loop %}
        {%- for pattern in chosen %}
        count(case when {{ matchers[pattern] | replace('__scanned_value__', 'cast(' ~ adapter.quote(column) ~ ' as varchar)') }}
            then 1 end) as match_{{ outer.index }}_{{ loop.index }}
        {{- "," if not (outer.last and loop.last) }}
        {%- endfor %}
        {%- endfor %}
    from {{ model }}
),

counts as (
    {%- for column in scanned %}
    {%- set outer = loop %}
    {%- for pattern in chosen %}
    select
        '{{ column | replace("'", "''") }}' as column_name,
        '{{ pattern }}' as pii_pattern,
        match_{{ outer.index }}_{{ loop.index }} as matching_rows
    from scanned
    {{ "union all" if not (outer.last and loop.last) }}
    {%- endfor %}
    {%- endfor %}
)

select column_name, pii_pattern, matching_rows
from counts
where matching_rows > 0
{%- endif %}
{% endmacro %}
