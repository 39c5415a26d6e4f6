{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Customers as delivered, with every direct identifier replaced by a keyed token (joinable) and
-- ciphertext under the customer's own data key. Append-only; re-reading landing adds nothing.
{%- set identifiers = [
    'customer_id', 'first_name', 'last_name', 'email', 'phone', 'national_id', 'street_address'
] %}
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
),

-- A row's identifiers are encrypted in one call: the subject's key is looked up once per row.
sealed as (
    select
        subjects.*,
        {{ encrypt_values_for_subject(identifiers, 'subject_token') }} as ciphertexts
    from subjects
    inner join subject_keys on subject_keys.keys_ready
)

select
    -- ingestion
    ingest_key,
    record_hash,
    source_file,
    {{ ingest_metadata() }},
    -- subject and direct identifiers
    subject_token,
    {{ ciphertext_of('ciphertexts', identifiers, 'customer_id') }} as customer_id_enc,
    {{ ciphertext_of('ciphertexts', identifiers, 'first_name') }} as first_name_enc,
    {{ ciphertext_of('ciphertexts', identifiers, 'last_name') }} as last_name_enc,
    {{ salted_hash('lower(trim(email))', 'email') }} as email_token,
    {{ ciphertext_of('ciphertexts', identifiers, 'email') }} as email_enc,
    {{ salted_hash("regexp_replace(phone, '[^0-9+]', '', 'g')", 'phone') }} as phone_token,
    {{ ciphertext_of('ciphertexts', identifiers, 'phone') }} as phone_enc,
    {{ salted_hash('national_id', 'national_id') }} as national_id_token,
    {{ ciphertext_of('ciphertexts', identifiers, 'national_id') }} as national_id_enc,
    {{ ciphertext_of('ciphertexts', identifiers, 'street_address') }} as street_address_enc,
    -- quasi-identifiers and attributes, still text as delivered
    birth_date,
    postcode,
    city,
    country,
    preferred_language,
    created_at,
    updated_at
from sealed
