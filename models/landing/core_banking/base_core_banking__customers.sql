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
        -- direct identifiers (tokenized and encrypted in bronze)
        nullif(trim(customer_id), '') as customer_id,
        first_name as first_name,
        last_name as last_name,
        email as email,
        phone as phone,
        national_id as national_id,
        street_address as street_address,
        -- quasi-identifiers and attributes
        birth_date as birth_date,
        postcode as postcode,
        city as city,
        country as country,
        preferred_language as preferred_language,
        created_at as created_at,
        updated_at as updated_at
    from records
)

select
    *,
    case
        when customer_id is null then 'missing_key'
        when not {{ is_valid_timestamp('birth_date', '%Y-%m-%d') }} then 'malformed_date'
        when not {{ is_valid_timestamp('created_at') }} then 'malformed_date'
        when not {{ is_valid_timestamp('updated_at') }} then 'malformed_date'
    end as reject_reason
from parsed
