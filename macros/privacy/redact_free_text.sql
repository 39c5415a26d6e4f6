{#-
    redact_free_text(expr): replace personal-data patterns in free text by placeholders:
    [EMAIL], [IBAN], [CARD], [NATIONAL_ID], [PHONE]. The patterns run in that order so the
    more specific one wins: an IBAN or a card number is never half-redacted as a phone number.
      email        local@domain.tld (letters and digits of any script)
      IBAN         2 capital letters, 2 check digits, 11 to 30 capitals/digits, optionally
                   in space-separated groups of 4
      card         13 to 19 digits, unbroken or in groups (4-4-4-1..7, Amex 4-6-5) separated
                   by single spaces or dashes
      national id  9 digits, unbroken or 3-2-4 with spaces or dashes
      phone        '+' and 7 to 15 digits, or 9 to 15 digits; separators space ( ) . -
    Pattern redaction is a heuristic: it over-redacts (an 8-digit date followed by a number
    can read as a phone number) and cannot find names or addresses. NULL stays NULL.
-#}
{% macro redact_free_text(expr) -%}
    {{ return(adapter.dispatch('redact_free_text', 'privacy_lakehouse')(expr)) }}
{%- endmacro %}

{#- Standard SQL has no global regular-expression replace. -#}
{% macro default__redact_free_text(expr) -%}
    {{ privacy_lakehouse._privacy_not_portable('redact_free_text') }}
{%- endmacro %}

{#- (RE2 pattern, placeholder) pairs in the order they are applied. Set blocks keep backslashes verbatim. -#}
{% macro _privacy_free_text_patterns() -%}
    {%- set email -%}[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:[.][\p{L}\p{N}-]+)+{%- endset -%}
    {%- set iban -%}\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b{%- endset -%}
    {%- set card -%}\b(?:[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{4}[ -]?[0-9]{1,7}|[0-9]{4}[ -]?[0-9]{6}[ -]?[0-9]{4,5})\b{%- endset -%}
    {%- set national_id -%}\b[0-9]{3}[ -]?[0-9]{2}[ -]?[0-9]{4}\b{%- endset -%}
    {%- set international_phone -%}[+][0-9](?:[ ().-]{0,2}[0-9]){6,14}\b{%- endset -%}
    {%- set national_phone -%}(?:[(]|\b)[0-9](?:[ ().-]{0,2}[0-9]){8,14}\b{%- endset -%}
    {{ return([
        (email, '[EMAIL]'),
        (iban, '[IBAN]'),
        (card, '[CARD]'),
        (national_id, '[NATIONAL_ID]'),
        (international_phone, '[PHONE]'),
        (national_phone, '[PHONE]'),
    ]) }}
{%- endmacro %}

{% macro duckdb__redact_free_text(expr) -%}
    {%- set redacted = namespace(sql='cast(' ~ expr ~ ' as varchar)') -%}
    {%- for pattern, placeholder in privacy_lakehouse._privacy_free_text_patterns() -%}
        {%- set redacted.sql = 'regexp_replace(' ~ redacted.sql ~ ', '
            ~ privacy_lakehouse._privacy_string_literal(pattern) ~ ', '
            ~ privacy_lakehouse._privacy_string_literal(placeholder) ~ ", 'g')" -%}
    {%- endfor -%}
    {{ redacted.sql }}
{%- endmacro %}
