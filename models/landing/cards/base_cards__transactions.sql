-- Parses and checks landing card transactions. Ephemeral: plaintext never persists past this CTE.
with

records as (
    {{ landing_records('cards', 'transactions') }}
),

parsed as (
    select
        source_file,
        record_hash,
        ingest_key,
        raw_record,
        has_undeclared_column,
        nullif(trim(transaction_id), '') as transaction_id,
        nullif(trim(account_id), '') as account_id,
        nullif(trim(customer_id), '') as customer_id,
        nullif(trim(card_number), '') as card_number,
        amount,
        currency,
        merchant_category,
        merchant_country,
        transaction_ts,
        channel,
        device_id
    from records
)

select
    *,
    case
        -- first: a header-less file's rows also lack their key; the cause is the header
        when has_undeclared_column then 'undeclared_column'
        when transaction_id is null or customer_id is null or card_number is null then 'missing_key'
        when not {{ is_valid_timestamp('transaction_ts') }} then 'malformed_date'
        when channel not in ('pos', 'online', 'atm') or channel is null then 'unknown_enum'
        when try_cast(amount as decimal(18, 2)) is null then 'bad_amount'
    end as reject_reason
from parsed
