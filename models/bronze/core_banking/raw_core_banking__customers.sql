{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Customers as delivered, with every direct identifier replaced by a keyed token (joinable) and
-- ciphertext under the customer's own data key. Append-only; re-reading landing adds nothing.
with

landing as (
    -- raw_record is for the quarantine only: not building it saves a JSON document per row
    select * exclude (raw_record) from {{ ref('base_core_banking__customers') }}
    where
        reject_reason is null
        and {{ not_erased('customer_id') }}
        and {{ not_yet_ingested('core_banking', 'customers') }}
),

subjects as (
    select
        *,
        {{ salted_hash('customer_id', 'subject') }} as subject_token
    from landing
),

-- Every new subject's data key made in one key-store transaction before anything is encrypted
-- (the join waits for it), instead of one commit per 2048-row chunk.
subject_keys as (
    select {{ ensure_subject_keys('subject_token') }} as keys_ready
    from subjects
)

select
    -- ingestion
    ingest_key,
    record_hash,
    source_file,
    {{ ingest_metadata() }},
    -- subject and direct identifiers
    subject_token,
    {{ encrypt_for_subject('customer_id', 'subject_token') }} as customer_id_enc,
    {{ encrypt_for_subject('first_name', 'subject_token') }} as first_name_enc,
    {{ encrypt_for_subject('last_name', 'subject_token') }} as last_name_enc,
    {{ salted_hash('lower(trim(email))', 'email') }} as email_token,
    {{ encrypt_for_subject('email', 'subject_token') }} as email_enc,
    {{ salted_hash("regexp_replace(phone, '[^0-9+]', '', 'g')", 'phone') }} as phone_token,
    {{ encrypt_for_subject('phone', 'subject_token') }} as phone_enc,
    {{ salted_hash('national_id', 'national_id') }} as national_id_token,
    {{ encrypt_for_subject('national_id', 'subject_token') }} as national_id_enc,
    {{ encrypt_for_subject('street_address', 'subject_token') }} as street_address_enc,
    -- quasi-identifiers and attributes, still text as delivered
    birth_date,
    postcode,
    city,
    country,
    preferred_language,
    created_at,
    updated_at
from subjects
inner join subject_keys on subject_keys.keys_ready
