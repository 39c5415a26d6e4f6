-- Parses and checks landing account rows. Ephemeral: plaintext never persists past this CTE.
with

records as (
    {{ landing_records('core_banking', 'accounts') }}
),

parsed as (
    select
        source_file,
        record_hash,
        ingest_key,
        raw_record,
        has_undeclared_column,
        nullif(trim(account_id), '') as account_id,
        nullif(trim(customer_id), '') as customer_id,
        iban,
        account_type,
        currency,
        opened_at,
        status,
        balance
    from records
)

select
    *,
    case
        -- first: a header-less file's rows also lack their key; the cause is the header
        when has_undeclared_column then 'undeclared_column'
        when account_id is null or customer_id is null then 'missing_key'
        when not ({{ is_valid_timestamp('opened_at') }} or {{ is_valid_timestamp('opened_at', '%Y-%m-%d') }}) then 'malformed_date'
        when account_type not in ('checking', 'savings', 'credit') or account_type is null then 'unknown_enum'
        when status not in ('open', 'closed') or status is null then 'unknown_enum'
        when try_cast(balance as decimal(18, 2)) is null then 'bad_amount'
    end as reject_reason
from parsed
