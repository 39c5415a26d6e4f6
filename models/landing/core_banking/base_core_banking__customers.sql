-- Parses and checks landing customer rows. Ephemeral: plaintext never persists past this CTE.
with

records as (
    {{ landing_records(source('core_banking', 'customers')) }}
),

parsed as (
    select
        -- identity of the landing row
        source_file,
        record_hash,
        ingest_key,
        raw_record,
        -- direct identifiers (tokenized and encrypted in bronze)
        nullif(trim(doc ->> 'customer_id'), '') as customer_id,
        doc ->> 'first_name' as first_name,
        doc ->> 'last_name' as last_name,
        doc ->> 'email' as email,
        doc ->> 'phone' as phone,
        doc ->> 'national_id' as national_id,
        doc ->> 'street_address' as street_address,
        -- quasi-identifiers and attributes
        doc ->> 'birth_date' as birth_date,
        doc ->> 'postcode' as postcode,
        doc ->> 'city' as city,
        doc ->> 'country' as country,
        doc ->> 'preferred_language' as preferred_language,
        doc ->> 'created_at' as created_at,
        doc ->> 'updated_at' as updated_at
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
