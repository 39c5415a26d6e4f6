-- Parses and checks landing customer rows. Ephemeral: plaintext never persists past this CTE.
with

records as (
    {{ landing_records('core_banking', 'customers') }}
),

parsed as (
    select
        -- identity of the landing row
        source_file,
        record_hash,
        ingest_key,
        raw_record,
        has_undeclared_column,
        -- direct identifiers (tokenized and encrypted in bronze)
        nullif(trim(customer_id), '') as customer_id,
        first_name,
        last_name,
        email,
        phone,
        national_id,
        street_address,
        -- quasi-identifiers and attributes
        birth_date,
        postcode,
        city,
        country,
        preferred_language,
        created_at,
        updated_at
    from records
)

select
    *,
    case
        -- first: a header-less file's rows also lack their key; the cause is the header
        when has_undeclared_column then 'undeclared_column'
        when customer_id is null then 'missing_key'
        when not {{ is_valid_timestamp('birth_date', '%Y-%m-%d') }} then 'malformed_date'
        when not {{ is_valid_timestamp('created_at') }} then 'malformed_date'
        when not {{ is_valid_timestamp('updated_at') }} then 'malformed_date'
    end as reject_reason
from parsed
