{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Card transactions as delivered. Cards, accounts and devices are tokenized (and card numbers
-- encrypted) once per distinct value, then joined back: far cheaper than once per transaction.
with

landing as (
    -- raw_record is for the quarantine only: not building it saves a JSON document per row
    select * exclude (raw_record) from {{ ref('base_cards__transactions') }}
    where
        reject_reason is null
        and {{ not_erased('customer_id') }}
        and {{ not_yet_ingested('cards', 'transactions') }}
),

cards as (
    select
        customer_id,
        card_number,
        {{ salted_hash('customer_id', 'subject') }} as subject_token,
        {{ salted_hash('card_number', 'card') }} as card_token
    from (select distinct customer_id, card_number from landing) as distinct_cards
),

-- Every new subject's data key made in one key-store transaction before anything is encrypted
-- (the join waits for it), instead of one commit per 2048-row chunk.
subject_keys as (
    select {{ ensure_subject_keys('subject_token') }} as keys_ready
    from cards
),

cards_encrypted as (
    select
        cards.*,
        {{ encrypt_for_subject('cards.card_number', 'cards.subject_token') }} as card_number_enc
    from cards
    inner join subject_keys on subject_keys.keys_ready
),

accounts as (
    select
        account_id,
        {{ salted_hash('account_id', 'account') }} as account_token
    from (select distinct account_id from landing) as distinct_accounts
),

devices as (
    select
        device_id,
        {{ salted_hash('device_id', 'device') }} as device_token
    from (select distinct device_id from landing) as distinct_devices
)

select
    landing.ingest_key,
    landing.record_hash,
    landing.source_file,
    {{ ingest_metadata() }},
    cards_encrypted.subject_token,
    accounts.account_token,
    cards_encrypted.card_token,
    cards_encrypted.card_number_enc,
    landing.transaction_id,
    landing.amount,
    landing.currency,
    landing.merchant_category,
    landing.merchant_country,
    landing.transaction_ts,
    landing.channel,
    devices.device_token
from landing
inner join cards_encrypted
    on
        landing.customer_id = cards_encrypted.customer_id
        and landing.card_number = cards_encrypted.card_number
left join accounts
    on landing.account_id = accounts.account_id
left join devices
    on landing.device_id = devices.device_id
